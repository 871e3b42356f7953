"""The one base class of errors caused by what a user gave us (a file, a flag, a run directory),
as opposed to bugs. The command line turns these -- and operating-system errors such as a missing
file -- into one line on stderr and exit status 1; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Something in the user's input is wrong; the message says what, where, and what to do."""


class ConfigError(ValueError, UserError):
    """An impossible combination of settings (model, architecture, sizes, objective)."""


class RunError(RuntimeError, UserError):
    """A run directory or checkpoint is missing, damaged, foreign, or unsafe to load."""


class DataFormatError(ValueError, UserError):
    """An input file cannot be read as the format asked for."""
