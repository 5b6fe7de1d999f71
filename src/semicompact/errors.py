"""User-facing errors.

Every problem a user can fix (a bad file, a wrong option, missing weights) raises a subclass of
:class:`SemicompactError` with one clear sentence naming the file or option and the fix. The CLI
prints that sentence and exits with status 2, never a traceback; library users can catch it.
"""

from __future__ import annotations


class SemicompactError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class DataError(SemicompactError):
    """Bad or unusable input data (images, folders, npz files, manifests)."""


class ImageReadError(DataError):
    """One image file could not be decoded."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot read image '{self.path}': {reason}. Replace or remove the file "
            "(a corrupt, truncated or non-image file)."
        )


class ModelError(SemicompactError):
    """Unknown model names, unusable weights, incompatible input sizes."""


class ConfigError(SemicompactError):
    """Bad option values or configuration files."""
