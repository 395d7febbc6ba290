"""Errors raised for bad media or prompts.

Every error is a ``ValueError`` whose message says what was wrong and what to do about it, so a
user never meets a crash deep inside a decoder or a reshape.

Example:
    >>> from hooked_avllm.inputs.errors import InputError
    >>> issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations


class InputError(ValueError):
    """A media file, array or prompt cannot be turned into model inputs; the message says why."""


class MediaFileNotFoundError(InputError, FileNotFoundError):
    """A media path does not exist (both a ``ValueError`` and a ``FileNotFoundError``)."""
