"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

import argparse


class UserError(Exception):
    """Bad input from the user (config, CLI flag, data files). Message is one sentence."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose parse errors raise :class:`UserError` (so the CLI prints
    one ``error: ...`` line and exits 2) instead of printing the usage and exiting itself."""

    def error(self, message):
        raise UserError(message)
