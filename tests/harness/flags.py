"""A stop flag for the Checkpointers that tests run inside the pytest process."""

from __future__ import annotations

from runai_entry.training.stop import StopFlag


def quiet_flag(timeout: float | None = None) -> StopFlag:
    """A flag that listens to no signal: it installs no handler in the pytest process, where a
    SIGTERM must still end the run. ``timeout``: the seconds a stop would leave (None: unknown).
    """
    return StopFlag(signals=[], timeout=timeout)
