"""Errors and warnings for bad or ambiguous media and prompts.

Every error is a ``ValueError`` whose message names the argument, the value and what to do about
it, so a user never meets a crash deep inside a decoder or a reshape. An :class:`InputWarning`
says that an input was read under an assumption the user did not state (an audio array's
sampling rate) and how to state it.

Example:
    >>> from hooked_avllm.inputs.errors import InputError, InputWarning, UnknownArgumentError
    >>> issubclass(InputError, ValueError), issubclass(UnknownArgumentError, TypeError)
    (True, True)
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


class InputError(ValueError):
    """A media file, array or prompt cannot be turned into model inputs; the message says why."""


class MediaFileNotFoundError(InputError, FileNotFoundError):
    """A media path does not exist (both a ``ValueError`` and a ``FileNotFoundError``)."""


class UnknownArgumentError(InputError, TypeError):
    """A keyword argument the call does not take (both a ``ValueError`` and the ``TypeError``
    Python raises for an unexpected keyword), named with the closest ones it does take."""


class InputWarning(UserWarning):
    """An input was taken under an assumption the caller did not state; the message says how to state it."""


def refuse_unknown(call: str, unknown: Iterable[str], known: Iterable[str]) -> None:
    """Raise :class:`UnknownArgumentError` for keyword arguments ``call`` does not take, naming each
    with the closest known ones (nothing happens when ``unknown`` is empty).

    Example:
        >>> refuse_unknown("prepare", ["vidoe_fps"], ["video_fps", "audio_padding"])
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.UnknownArgumentError: prepare() got an unknown keyword argument vidoe_fps= (did you mean video_fps=?); it takes audio_padding=, video_fps=
    """
    unknown, known = sorted(unknown), sorted(known)
    if not unknown:
        return
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
        named.append(f"{name}=" + (f" (did you mean {' or '.join(c + '=' for c in close)}?)" if close else ""))
    plural = "s" if len(unknown) > 1 else ""
    raise UnknownArgumentError(
        f"{call}() got an unknown keyword argument{plural} {', '.join(named)}; it takes {', '.join(k + '=' for k in known)}"
    )


def describe(value: Any) -> str:
    """A short description of an input value for a message: a path as written, an array's type,
    shape and dtype, an image's mode and size, else the type and a short repr.

    Example:
        >>> import numpy as np
        >>> describe("clip.mp4"), describe(np.zeros((2, 3), np.float32))
        ("'clip.mp4'", 'ndarray of shape (2, 3), float32')
    """
    if isinstance(value, (str, Path)):
        return repr(str(value))
    if isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "shape"):  # (samples, rate)
        return f"({describe(value[0])}, {value[1]!r})"
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{kind} of shape {tuple(shape)}, {str(value.dtype).removeprefix('torch.')}"
    if hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        return f"a {value.mode} PIL image of size {value.size}"
    text = repr(value)
    return f"{article} {kind}" + (f" {text}" if len(text) <= 60 else "")


@contextmanager
def about(argument: str, value: Any) -> Iterator[None]:
    """Name the argument (and its value) in any :class:`InputError` raised inside, so a message
    from deep in a loader says which input it is about; the error keeps its type.

    Example:
        >>> with about("audio=", "missing.wav"):
        ...     raise InputError("the file is missing")
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: audio= 'missing.wav': the file is missing
    """
    try:
        yield
    except UnknownArgumentError:
        raise
    except InputError as err:
        message = str(err)
        if message.startswith(argument):
            raise
        raise type(err)(f"{argument} {describe(value)}: {message}") from err


__all__ = ["InputError", "InputWarning", "MediaFileNotFoundError", "UnknownArgumentError", "about", "describe", "refuse_unknown"]
