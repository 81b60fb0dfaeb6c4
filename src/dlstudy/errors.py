"""User-facing errors: the CLI prints their message (no traceback) and exits with their `exit_code`."""


class DlstudyError(Exception):
    """Base class of every error whose message is meant for the user."""

    exit_code = 2  # bad input or environment: nothing was (or could be) done


class ConfigError(DlstudyError, ValueError):
    """A config file, `--set` override or argument is invalid."""


class DataError(DlstudyError, ValueError):
    """A dataset is missing, malformed or corrupt. The message names the file or folder."""


class WeightsError(DlstudyError):
    """Model weights cannot be found or loaded."""


class TrainingDiverged(DlstudyError):
    """The loss (or the model's scores) became NaN or inf; the last good checkpoint is kept."""

    exit_code = 1  # a failed run, like a run that raised anything else


class DiskFullError(DlstudyError, OSError):
    """A write met a full disk or quota (or stopped short). The message names the file and the free space; the
    file was not written and the previous version of it, if any, is intact. An OSError too, so code that tolerates
    a failed optional write (a cache) still does."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ScoresNotFinite(TrainingDiverged, ValueError):
    """Model scores hold NaN or inf (weights that diverged), seen where no epoch or step is known."""


class RunLocked(DlstudyError):
    """A run folder is being trained by another live process (it holds the folder's lock); nothing was done.
    `holder` says which process ("process 1234", or "process 1234 on HOST" for another machine)."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


class StudyInProgress(DlstudyError):
    """`dlstudy run --no-wait`: runs of the study are in progress in other processes, so its report was not
    written."""

    exit_code = 1  # this process's runs are done, but the study is not
