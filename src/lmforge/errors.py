"""User-facing errors: each says what went wrong and how to fix it.

The CLI prints these as one line without a traceback and exits non-zero; anything
else that escapes is a bug in lmforge.
"""


class LmforgeError(Exception):
    """Base class for mistakes a user can fix (bad path, config, file or request)."""


class ConfigError(LmforgeError):
    """A config file or key=value override is malformed, unknown or of the wrong type."""


class DataError(LmforgeError):
    """A corpus or token shard is missing, empty or inconsistent."""


class CheckpointError(LmforgeError):
    """A checkpoint is missing, corrupt, or does not match the model or data it is used with."""


class GenerationError(LmforgeError):
    """A generation request cannot be served (prompt too long, token ids out of vocabulary)."""


class OutputError(LmforgeError):
    """An output path cannot be written, or writing it would destroy files lmforge did not write."""
