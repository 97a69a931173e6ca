"""Exceptions with one-line, user-facing messages.

Every error a user can cause (bad flags, bad corpus, bad checkpoint, a diverging run) is raised as a
subclass of `JaxrnnError` whose message says what is wrong *and* what to do. The launchers in
`experiments/` catch `JaxrnnError`, print the message on one line and exit with status 2, so a user
never sees a traceback wall for a mistake of theirs. Programming errors stay ordinary exceptions.
"""


class JaxrnnError(Exception):
    """Base class: a problem the user can fix; `str(err)` is a one-line explanation and remedy."""


class ConfigError(JaxrnnError, ValueError):
    """An invalid option or flag value (hidden size <= 0, unknown arch, temperature <= 0, ...)."""


class DataError(JaxrnnError, ValueError):
    """The corpus cannot be used (missing, empty, not UTF-8, shorter than one window, ...)."""


class CheckpointError(JaxrnnError, ValueError):
    """A checkpoint is missing, truncated, corrupted, or does not match the requested model."""


class TrainingDivergedError(JaxrnnError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class FolderBusyError(JaxrnnError):
    """Another process holds the lock of a run or results folder (`jaxrnn.files.folder_lock`)."""


class StorageError(JaxrnnError, OSError):
    """A write failed for lack of room or a failing disk (ENOSPC, EDQUOT, EIO): the message names
    the folder, the bytes the write needed and those free; what was written before is intact.

    ``rerun``: set by the code that knows how the work continues once there is room -- the flag
    the same command needs (``"--resume"``, ``"--overwrite"``), ``""`` for the same command as
    it was, or None (unknown); the launchers then print that command on the same line.
    """

    rerun = None
