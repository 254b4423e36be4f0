"""Errors meant for people: each says what is wrong and what to do about it."""

from __future__ import annotations


class MRIMasterError(Exception):
    """An error caused by the user's input or environment, shown without a traceback.

    Args:
        message: What is wrong, in one sentence.
        hint: What to do about it (optional).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ImageLoadError(MRIMasterError):
    """A file could not be decoded as an image."""


class DataError(MRIMasterError):
    """A dataset folder is missing, empty or malformed."""


class ModelError(MRIMasterError):
    """A model cannot be built, found or loaded."""


class ConfigError(MRIMasterError):
    """A configuration file or override is invalid."""
