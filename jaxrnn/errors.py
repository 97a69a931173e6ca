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
