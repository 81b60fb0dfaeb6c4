"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class DlstudyError(Exception):
    """Base class of every error whose message is meant for the user."""


class ConfigError(DlstudyError, ValueError):
    """A config file, `--set` override or argument is invalid."""


class DataError(DlstudyError, ValueError):
    """A dataset is missing, malformed or corrupt. The message names the file or folder."""


class WeightsError(DlstudyError):
    """Model weights cannot be found or loaded."""


class TrainingDiverged(DlstudyError):
    """The loss became NaN or inf; the last good checkpoint is kept."""
