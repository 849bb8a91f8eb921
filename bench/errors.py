"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

# What str.splitlines() breaks a line at, shown escaped instead (a value quoted from the input may hold one).
_LINE_BREAKS = {ch: ch.encode("unicode_escape").decode() for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class UserError(Exception):
    """Bad input from the user (config, CLI flag, data files). Message is one sentence, and one
    line whatever the user typed: a line break in it is shown escaped (``\\n``)."""

    def __init__(self, message: str = "") -> None:
        super().__init__("".join(_LINE_BREAKS.get(ch, ch) for ch in str(message)))
