"""One attempt's bookkeeping around the job, when there is a checkpoint directory.

Once per run: check that the directory is on shared storage. Before each start: find the
newest complete checkpoint to resume from, and count the attempt. After the end: find the newest
checkpoint the job left, and append the attempt's line to the history. Nothing here logs:
facts come back as values, and warnings as :class:`Note` events for the caller to log once its
logger exists (which is only after the job has started).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from runai_entry import envvars
from runai_entry.bounded import call_with_timeout
from runai_entry.checkpoints import Discovery, discover
from runai_entry.config import Config
from runai_entry.errors import CheckpointDirUnavailable, ConfigError
from runai_entry.history import (
    HistoryUnavailable,
    begin_attempt,
    record_attempt,
    utc_timestamp,
)
from runai_entry.history import base_record as common_fields
from runai_entry.signals import signal_name
from runai_entry.storage import check

#: How long the checkpoint directory may take to answer before runai-entry gives up on it.
DISCOVERY_TIMEOUT = 30.0
#: The most the after-the-job bookkeeping may take; during a preemption it must also fit in
#: what is left of the grace period, since the platform's SIGKILL would lose our exit code.
FINISH_TIMEOUT = 5.0


class Note(NamedTuple):
    """An event to log: level, event name, fields."""

    level: str
    event: str
    fields: dict[str, Any]


class Prepared(NamedTuple):
    """What the job is started with."""

    argv: list[str]
    env: dict[str, str]
    attempt: int | None
    discovery: Discovery | None
    notes: list[Note]


def check_storage(directory: str, require_network_storage: bool) -> list[Note]:
    """The warning to log when ``directory`` is not on network storage (once per run: the
    drill's attempts share it). Raises :class:`ConfigError` for a local filesystem when
    ``--require-network-storage``.
    """
    try:
        storage = check(directory)
    except OSError:  # the path's ancestors cannot be resolved: discovery will say why
        return []
    if storage.warning is None:
        return []
    # Only a filesystem known to be local fails the job: an unknown type may well be shared,
    # and a user who demanded network storage should not lose a run to our list.
    if require_network_storage and storage.kind == "local":
        raise ConfigError(f"--require-network-storage: {storage.warning}")
    return [Note("warning", "checkpoints_not_on_network_storage",
                 {"filesystem": storage.kind, "problem": storage.warning})]


def prepare(directory: str, config: Config, argv: list[str], env: dict[str, str]) -> Prepared:
    """Add the resume flag, the checkpoint variables and the attempt number to argv and env.

    Raises :class:`CheckpointDirUnavailable`: the job must not start from scratch over
    checkpoints it merely failed to see.
    """
    notes = []
    found = discover(directory, pattern=config.checkpoint_glob, verify=config.verify_checkpoints,
                     timeout=DISCOVERY_TIMEOUT)
    for skipped in found.skipped:
        notes.append(Note("info", "checkpoint_skipped", {"name": skipped.name,
                                                         "reason": skipped.reason}))
    env = dict(env)
    env[envvars.CHECKPOINT_DIR] = directory
    argv = list(argv)
    if found.chosen is not None:
        env[envvars.RESUME_FROM] = found.chosen.path
        if config.resume_flag:
            argv += [config.resume_flag, found.chosen.path]
        notes.append(Note("info", "resuming", {
            "checkpoint": found.chosen.path, "layout": found.chosen.layout,
            "step": found.chosen.step, "ordered_by": found.ordered_by,
            "flag": config.resume_flag or None}))
    else:
        env.pop(envvars.RESUME_FROM, None)  # never pass on a stale one from our own environment
        notes.append(Note("info", "starting_fresh", {
            "checkpoint_dir": directory,
            "reason": "no complete checkpoint" if found.exists else "directory does not exist yet",
        }))

    attempt = _begin_attempt(directory, env, notes)
    if attempt is not None:
        env[envvars.ATTEMPT] = str(attempt)
    return Prepared(argv, env, attempt, found, notes)


def _begin_attempt(directory: str, env: Mapping[str, str], notes: list[Note]) -> int | None:
    try:
        return begin_attempt(directory, env)
    except HistoryUnavailable as exc:
        notes.append(Note("warning", "attempt_history_unavailable", {"problem": str(exc)}))
        return None


def finish(directory: str, config: Config, prepared: Prepared, result: Any, started_at: float,
           time_left: float | None) -> tuple[dict[str, Any], list[Note]]:
    """After the job: the newest checkpoint it left, and the history line. Bounded in time."""
    record = base_record(config, prepared, result, started_at)
    budget = FINISH_TIMEOUT if time_left is None else max(0.0, min(FINISH_TIMEOUT, time_left))

    def work() -> dict[str, Any]:
        found = discover(directory, pattern=config.checkpoint_glob, timeout=None,
                         max_candidates=1)
        if found.chosen is not None:
            record["newest_at_end"] = found.chosen.path
            record["newest_step"] = found.chosen.step
            record["newest_mtime"] = found.chosen.mtime
        record_attempt(directory, record)
        return record

    try:
        return call_with_timeout(work, budget), []
    except TimeoutError:
        return record, [Note("warning", "attempt_not_recorded", {
            "problem": f"checkpoint directory did not answer within {budget:.1f}s"})]
    except (OSError, CheckpointDirUnavailable, HistoryUnavailable) as exc:
        return record, [Note("warning", "attempt_not_recorded", {"problem": str(exc)})]


def base_record(config: Config, prepared: Prepared, result: Any,
                started_at: float) -> dict[str, Any]:
    """The attempt as the history stores it (without what only the directory can tell)."""
    chosen = prepared.discovery.chosen if prepared.discovery else None
    return common_fields(
        prepared.attempt,  # type: ignore[arg-type]  # None when the history was unavailable
        prepared.env,
        started_at=utc_timestamp(started_at),
        ended_at=utc_timestamp(time.time()),
        command=list(config.command),
        outcome=result.outcome.value,
        exit_code=result.exit_code,
        returncode=result.returncode,
        simulated=result.simulated,
        ran_for_s=round(result.ran_for, 3),
        stop_signal=signal_name(config.stop_signal),
        stop_timeout_s=config.stop_timeout,
        grace_used_s=None if result.grace_used is None else round(result.grace_used, 3),
        resumed_from=chosen.path if chosen else None,
        resumed_step=chosen.step if chosen else None,
        # With the name and step, the checkpoint's identity: a file rewritten under the same
        # name (Lightning's on_exception.ckpt) is a new checkpoint. Discovery stats the entries
        # exactly when names carry no number, which is when the mtime is needed.
        resumed_mtime=chosen.mtime if chosen else None,
        newest_at_end=None,
        newest_step=None,
        newest_mtime=None,
    )
