"""Where to resume from, and which attempt this is.

runai-entry passes the newest complete checkpoint twice: as ``--resume-from PATH`` appended to
the command and as ``RUNAI_ENTRY_RESUME_FROM``. Without runai-entry, give the checkpoint
directory and the same discovery runai-entry uses picks the checkpoint.
"""

from __future__ import annotations

import os

from runai_entry.core import envvars
from runai_entry.core.errors import ConfigError


def resume_path(
    explicit: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
    pattern: str | None = None,
) -> str | None:
    """The checkpoint to resume from, or None to start from scratch.

    In order: ``explicit`` (the ``--resume-from`` your argument parser read), then
    ``RUNAI_ENTRY_RESUME_FROM``, then the newest complete checkpoint that discovery finds in
    ``directory`` (default ``RUNAI_ENTRY_CHECKPOINT_DIR``) matching ``pattern``, verified as
    runai-entry verifies it (a torn file is passed over). A directory that
    does not exist yet means a first run: None.
    """
    if explicit is not None and os.fspath(explicit) != "":
        return os.fspath(explicit)
    from_env = os.environ.get(envvars.RESUME_FROM, "")
    if from_env:
        return from_env
    if directory is None:
        directory = os.environ.get(envvars.CHECKPOINT_DIR) or None
    if directory is None:
        return None
    # Imported here: discovery is only needed when runai-entry did not already choose.
    from runai_entry.checkpoints import newest_checkpoint

    # Verified, as runai-entry's own discovery is: "the newest checkpoint" has one meaning.
    return newest_checkpoint(os.fspath(directory), pattern=pattern, verify=True)


def attempt() -> int | None:
    """1 on the first run against the checkpoint directory, +1 per requeue.

    None when not run by runai-entry: the attempt is unknown, not necessarily the first.
    """
    value = os.environ.get(envvars.ATTEMPT, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{envvars.ATTEMPT}={value!r} is not a whole number") from None
    if number < 1:
        raise ConfigError(f"{envvars.ATTEMPT}={value!r} must be >= 1")
    return number


def checkpoint_dir(default: str | os.PathLike[str] | None = None) -> str | None:
    """``RUNAI_ENTRY_CHECKPOINT_DIR`` when runai-entry set it, else ``default``."""
    value = os.environ.get(envvars.CHECKPOINT_DIR, "")
    if value:
        return value
    return None if default is None else os.fspath(default)
