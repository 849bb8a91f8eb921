"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (config, CLI flag, data files). Message is one sentence."""
