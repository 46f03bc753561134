"""What a name alone tells: checkpoint extensions, names being written, and the numbers in it.

Pure functions of strings, no I/O. Which entries become candidates, and how their numbers order
them, is decided in :mod:`runai_entry.checkpoints.listing`.
"""

from __future__ import annotations

import re

#: File extensions that mark a single-file checkpoint. ``.weights.h5`` is covered by ``.h5`` and
#: ``.pth.tar`` by ``.tar``.
FILE_SUFFIXES: tuple[str, ...] = (
    ".pt",
    ".pth",
    ".ckpt",
    ".bin",
    ".safetensors",
    ".h5",
    ".hdf5",
    ".keras",
    ".pkl",
    ".pickle",
    ".npz",
    ".msgpack",
    ".joblib",
    ".tar",
)
#: Names that end like this are being written (or were abandoned mid-write).
PARTIAL_SUFFIXES: tuple[str, ...] = (".tmp", ".partial", ".incomplete", "~")
#: In the name of Orbax's temporary step directories: never complete, reported as in progress.
ORBAX_TMP = ".orbax-checkpoint-tmp"
#: The file a TensorFlow checkpoint writes last; the checkpoint's path is the name without it.
TF_INDEX = ".index"

# A number right after a keyword: "step=1200", "epoch_3", "iter100", "ckpt-7", "checkpoint-500".
# The look-behind keeps "timestep5" from counting as a step.
_KEYWORD_NUMBER = re.compile(
    r"(?<![a-z])(step|iter(?:ation)?|epoch|checkpoint|ckpt)s?[^a-z0-9]{0,3}(\d+)", re.IGNORECASE
)
_NUMBER = re.compile(r"\d+")
# Lightning appends "-v1", "-v2" when a name is taken; it is not a step.
_VERSION_SUFFIX = re.compile(r"-v\d+$")

#: Where a number sits in a name: ``name[start:end]``.
Span = tuple[int, int]

# Every ASCII digit becomes "0". No pattern above tells one ASCII digit from another, so names
# equal after this translation have their numbers at the same places (see number_spans).
_SHAPE = str.maketrans("123456789", "000000000")


def number_spans(name: str) -> tuple[Span | None, Span | None]:
    """Where :func:`parse_step` finds the epoch and the step in ``name``: ``(epoch, step)``.

    Two names with the same :func:`shapes` have the same spans, so one call serves a
    directory of 100,000 ``step-NNNNNNNN.pt`` files.
    """
    epoch: Span | None = None
    step: Span | None = None
    counter: Span | None = None
    for match in _KEYWORD_NUMBER.finditer(name):
        first = match.group(1)[0].lower()
        if first == "e":
            epoch = match.span(2) if epoch is None else epoch
        elif first == "c":  # checkpoint, ckpt
            counter = match.span(2) if counter is None else counter
        elif step is None:
            step = match.span(2)
    if step is None:
        step = counter
    if step is None and epoch is None:
        # The suffix is cut from the end only, so the spans left are the same in ``name``.
        numbers = list(_NUMBER.finditer(_VERSION_SUFFIX.sub("", name)))
        if numbers:
            step = numbers[-1].span()
    return epoch, step


def parse_step(name: str) -> tuple[int | None, int | None]:
    """Return ``(epoch, step)`` parsed from a checkpoint name (extension already removed).

    The step is the number after ``step``/``iter``/``iteration``; else the one after
    ``checkpoint``/``ckpt``; else, when the name has no epoch either, the last number in the
    name (``000123``, ``model_42``), ignoring a Lightning ``-vN`` suffix. The epoch is the number
    after ``epoch``. The first occurrence of each keyword counts.
    """
    epoch, step = number_spans(name)
    return (
        int(name[epoch[0]:epoch[1]]) if epoch else None,
        int(name[step[0]:step[1]]) if step else None,
    )


def shapes(names: list[str]) -> list[str]:
    """Each name with its ASCII digits replaced by ``0``: names of one shape parse alike.

    One C pass over all the names at once; a name cannot hold a NUL, so it separates them.
    """
    return "\0".join(names).translate(_SHAPE).split("\0") if names else []


def checkpoint_suffix(name: str) -> str | None:
    """Return the checkpoint extension ``name`` ends with, or None."""
    lowered = name.lower()
    if not lowered.endswith(FILE_SUFFIXES):
        return None
    for suffix in FILE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


#: The shapes of the extensions that hold a digit (``.h5`` and ``.hdf5``): a name of such a
#: shape may or may not end in a checkpoint extension (``.h5`` is one, ``.h7`` is not).
DIGIT_SUFFIX_SHAPES: tuple[str, ...] = tuple(
    s.translate(_SHAPE) for s in FILE_SUFFIXES if s != s.translate(_SHAPE))
