"""One attempt's bookkeeping around the job, when there is a checkpoint directory.

Before the start: check once per run that the directory is on shared storage, find the newest
complete checkpoint to resume from, note the peers' preemption marker, and count the attempt.
After the end: find the newest checkpoint the job left, and append the attempt's line to the
history. All of it touches the checkpoint directory, which may be a network mount that stopped
answering, so all of it runs in a helper process against a deadline
(:mod:`runai_entry.supervisor.storage_io`) while runai-entry keeps answering signals. Nothing here
logs: facts come back as values, and warnings as :class:`Note` events for the caller to log once
its logger exists (which is only after the job has started).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from typing import Any, NamedTuple

from runai_entry.checkpoints import Candidate, Discovery, discover
from runai_entry.checkpoints.verify import fingerprint
from runai_entry.config.loading import Config
from runai_entry.config.resumeflag import resume_args
from runai_entry.core import envvars
from runai_entry.core.attempt_record import (
    AttemptRecord,
    Checkpoint,
    ProcessFailure,
    SaveEstimate,
    SkippedCheckpoint,
)
from runai_entry.core.errors import (
    CheckpointDirUnavailable,
    ConfigError,
    CrashLoop,
    StoppedBeforeStart,
)
from runai_entry.core.signals import handled_signals, signal_name
from runai_entry.history import crashloop, statedir
from runai_entry.history.store import (
    HISTORY_FILE,
    Clock,
    HistoryUnavailable,
    base_record,
    count_attempt,
    member_is_named,
    member_of,
    read_history,
    record_attempt,
    state_dir,
    utc_timestamp,
)
from runai_entry.supervisor import jobwide_markers, keptcopy, storage_io
from runai_entry.supervisor.heartbeat_dir import Progress
from runai_entry.supervisor.loop import Failure, Result, describe
from runai_entry.supervisor.mount import StorageCheck, check

#: The most the after-the-job bookkeeping may take; during a preemption it must also fit in
#: what is left of the grace period, since the platform's SIGKILL would lose our exit code.
FINISH_TIMEOUT = 5.0

#: What runai-entry waits for while a helper works: the same signals the supervisor handles.
_SIGNALS = handled_signals()


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
    membership: jobwide_markers.Membership | None  # None: job-wide preemption is off
    #: What the start found that the history keeps: the kept copy resumed from, the torn
    #: checkpoints started fresh over, the content of the checkpoint resumed from.
    facts: dict[str, Any] | None = None


class _Read(NamedTuple):
    """What the preparing helper brings back from the directory."""

    storage: StorageCheck | None
    kept: keptcopy.Start
    digest: str | None  # the content of the checkpoint resumed from (crashloop.py)
    baseline: jobwide_markers.Identity | None
    attempt: int | None
    history_problem: str | None
    stalled: list[AttemptRecord]  # the latest attempts without progress (crash-loop guard)


#: How many complete checkpoints the end of an attempt lists: the newest, and the ones the
#: attempt wrote, for the history's goodput figures and the timeline's ticks.
CHECKPOINTS_AT_END = 20


def find_checkpoints(directory: str, config: Config,
                     max_candidates: int | None = 10) -> Discovery:
    """The one definition of "the newest checkpoint": the same glob, layouts and verification
    before the start, after the end (the crash-loop guard's progress), and for --inspect.

    A file that fails verification is never the newest: were the end of an attempt to look
    without verifying, a torn ``step-10.pt`` would count as progress on every attempt that the
    start then skipped, and the crash-loop guard would never trip.
    """
    return discover(directory, pattern=config.checkpoint_glob, verify=config.verify_checkpoints,
                    timeout=None, max_candidates=max_candidates)


def job_wide(config: Config, environ: dict[str, str]) -> bool:
    """Whether this member takes part in job-wide preemption (``--job-wide-preemption``)."""
    if config.checkpoint_dir is None or config.job_wide_preemption == "off":
        return False
    return config.job_wide_preemption == "on" or member_is_named(environ)


def prepare(directory: str, config: Config, argv: list[str], env: dict[str, str], *,
            check_storage: bool) -> Prepared:
    """Add the resume flag, the checkpoint variables and the attempt number to argv and env.

    Raises :class:`CheckpointDirUnavailable` when the directory cannot be read or does not
    answer within ``--storage-timeout`` (the job must not start from scratch over checkpoints
    it merely failed to see), :class:`CrashLoop` when the last attempts made no progress, and
    :class:`StoppedBeforeStart` on SIGTERM meanwhile. Other signals that arrive meanwhile are
    raised again, to be forwarded once the job has started. ``check_storage``: also check the
    filesystem (once per run: the drill's attempts share it).
    """
    watching = job_wide(config, env)
    since = time.time()  # a peer's preemption announced from now on is this attempt's
    read = _call(lambda stage: _read(directory, config, env, check_storage, watching, stage),
                 directory, config.storage_timeout)
    notes = _storage_notes(read.storage, config.require_network_storage)
    limit = config.max_attempts_without_progress
    if limit and len(read.stalled) >= limit:
        raise CrashLoop(
            f"the last {limit} attempts of member {member_of(env)} made no progress (no newer "
            f"checkpoint in {directory!r}): {crashloop.describe(read.stalled[-limit:])}; not "
            "starting another. Fix the job, then run again with "
            "--max-attempts-without-progress 0 once (or a higher limit)")
    found = read.kept.discovery
    notes += [Note("info", "checkpoint_skipped", {"name": s.name, "reason": s.reason})
              for s in found.skipped]
    notes += [Note(*event) for event in read.kept.events]
    env, argv = dict(env), list(argv)
    env[envvars.CHECKPOINT_DIR] = directory
    if found.chosen is not None:
        env[envvars.RESUME_FROM] = found.chosen.path
        added = resume_args(config.resume_flag, found.chosen.path)
        argv += added
        notes.append(Note("info", "resuming", {
            "checkpoint": found.chosen.path, "layout": found.chosen.layout,
            "step": found.chosen.step, "ordered_by": found.ordered_by,
            "flag": config.resume_flag or None, "arguments": added}))
    else:
        env.pop(envvars.RESUME_FROM, None)  # never pass on a stale one from our own environment
        notes.append(Note("info", "starting_fresh", {
            "checkpoint_dir": directory,
            "reason": "no complete checkpoint" if found.exists else "directory does not exist yet",
        }))
    if read.history_problem is not None:
        notes.append(Note("warning", "attempt_history_unavailable",
                          {"problem": read.history_problem}))
    else:
        env[envvars.ATTEMPT] = str(read.attempt)
    membership = None
    if watching:
        membership = jobwide_markers.Membership(directory, member_of(env), read.attempt,
                                                jobwide_markers.new_token(), read.baseline, since)
    facts = {**keptcopy.history_fields(read.kept), "resumed_digest": read.digest}
    return Prepared(argv, env, read.attempt, found, notes, membership, facts)


def _read(directory: str, config: Config, env: dict[str, str], check_storage: bool,
          watching: bool, stage: Callable[[str], None]) -> _Read:
    """Everything the start needs from the directory (runs in the preparing helper)."""
    storage = None
    if check_storage:
        stage(f"finding the filesystem of {directory!r}")
        storage = _check(directory)
    stage(f"reading the checkpoints in {directory!r}")
    found = _with_write_time(find_checkpoints(directory, config))
    found.resume_point()  # raises (exit 75) when the search gave up: never start fresh over it
    stage(f"keeping or reading a copy in {os.path.join(state_dir(directory), keptcopy.KEPT_DIR)!r}")
    kept = keptcopy.at_start(directory, found, verified=config.verify_checkpoints,
                             refuse_fresh=config.refuse_fresh_start,
                             seconds=min(keptcopy.COPY_SECONDS, config.storage_timeout / 4))
    found, digest = kept.discovery, _digest(kept.discovery.chosen)
    baseline = None
    if watching and found.exists:
        stage(f"reading {jobwide_markers.marker_path(directory)!r}")
        with suppress(OSError):  # unreadable state: the attempt count below says why
            baseline = jobwide_markers.identity(directory)
    stalled: list[AttemptRecord] = []
    limit = config.max_attempts_without_progress
    if limit and found.exists:
        stage(f"reading the attempt history in {state_dir(directory)!r}")
        with suppress(HistoryUnavailable):  # an unreadable history guards nothing
            stalled = crashloop.without_progress(read_history(directory), member_of(env))
        if len(stalled) >= limit:  # refused: this start is not counted
            return _Read(storage, kept, digest, baseline, None, None, stalled)
    stage(f"counting the attempt in {state_dir(directory)!r}")
    try:
        return _Read(storage, kept, digest, baseline, count_attempt(directory, env), None,
                     stalled)
    except HistoryUnavailable as exc:
        return _Read(storage, kept, digest, baseline, None, str(exc), stalled)


def _digest(candidate: Candidate | None) -> str | None:
    """The content of a single-file checkpoint
    (:func:`runai_entry.checkpoints.verify.fingerprint`): the crash-loop guard tells a re-save of
    the state resumed from by it."""
    if candidate is None or candidate.layout != "file":
        return None
    try:
        return fingerprint(candidate.path)
    except OSError:  # removed or unreadable since it was verified: the identity still tells
        return None


def _with_write_time(found: Discovery) -> Discovery:
    """The chosen checkpoint with its mtime, which discovery reads only when names carry no
    number: the history compares it with the newest at the end (both stat'ed, so a file
    rewritten in place is told apart), and goodput's lost work counts from it."""
    chosen = found.chosen
    if chosen is None or chosen.mtime is not None:
        return found
    try:
        mtime = os.stat(os.path.join(found.directory, chosen.name)).st_mtime
    except OSError:  # gone since the listing: the job will say so when it loads it
        return found
    stamped = replace(chosen, mtime=mtime)
    return replace(found, chosen=stamped, candidates=tuple(
        stamped if c is chosen else c for c in found.candidates))


def _call(work: storage_io.Work[_Read], directory: str, timeout: float) -> _Read:
    """Run the preparing helper; SIGTERM meanwhile stops the attempt before it starts."""
    postponed: list[int] = []

    def on_signal(signum: int) -> None:
        if signum == signal.SIGTERM:
            raise StoppedBeforeStart("SIGTERM while the checkpoint directory was being read")
        postponed.append(signum)  # no job to forward it to yet

    try:
        return storage_io.call(work, f"checkpoint directory {directory!r}", timeout, _SIGNALS,
                               on_signal)
    except storage_io.HelperTimeout as exc:
        raise unanswered(directory, exc) from None
    finally:
        for signum in postponed:  # pending again, for the supervisor to forward
            os.kill(os.getpid(), signum)


def unanswered(directory: str, timeout: storage_io.HelperTimeout) -> CheckpointDirUnavailable:
    """The one line for a directory that did not answer in time (exit 75)."""
    return CheckpointDirUnavailable(
        f"checkpoint directory {directory!r}: {timeout.stage} did not answer within "
        f"{timeout.waited:.1f}s (--storage-timeout; a hung network mount?)")


def _check(directory: str) -> StorageCheck | None:
    try:
        return check(directory)
    except OSError:  # the path's ancestors cannot be resolved: discovery will say why
        return None


def _storage_notes(storage: StorageCheck | None, require_network_storage: bool) -> list[Note]:
    """The warning to log when the directory is not on network storage. Raises
    :class:`ConfigError` for a local filesystem when ``--require-network-storage``."""
    if storage is None or storage.warning is None:
        return []
    # Only a filesystem known to be local fails the job: an unknown type may well be shared,
    # and a user who demanded network storage should not lose a run to our list.
    if require_network_storage and storage.kind == "local":
        raise ConfigError(f"--require-network-storage: {storage.warning}")
    return [Note("warning", "checkpoints_not_on_network_storage",
                 {"filesystem": storage.kind, "problem": storage.warning})]


def finish(directory: str, config: Config, prepared: Prepared, result: Result, clock: Clock,
           beats: Progress | None, time_left: float | None) -> tuple[AttemptRecord, list[Note]]:
    """After the job: the checkpoints it left, and the history line. Bounded in time.

    ``beats``: what the job's heartbeats said (None when it never beat). The helper that writes
    the line may outlive runai-entry: when the directory does not answer in time, runai-entry
    exits with the job's code, and the line is appended once the directory answers (unless
    runai-entry is PID 1, whose exit ends every process with it).
    """
    record = attempt_record(config, prepared, result, clock, beats)
    budget = min(FINISH_TIMEOUT, config.storage_timeout)
    if time_left is not None:
        budget = max(0.0, min(budget, time_left))

    def work(stage: Callable[[str], None]) -> AttemptRecord:
        stage(f"reading the checkpoints in {directory!r}")
        found = find_checkpoints(directory, config, CHECKPOINTS_AT_END)
        done = record.updated(**_at_end(found, clock.epoch, _stop_epoch(result, clock)))
        estimate = _save_estimate(directory)
        if estimate is not None:
            done = done.updated(save_estimate=estimate)
        stage(f"appending to {os.path.join(state_dir(directory), HISTORY_FILE)!r}")
        record_attempt(directory, done)
        return done

    helper = storage_io.start(work, "attempt history", outlive_parent=True)
    try:
        # Signals now find no job to forward to, and the budget is short: they are dropped.
        return storage_io.await_result(helper, helper.started + budget, _SIGNALS), []
    except storage_io.HelperTimeout as exc:
        return record, [Note("warning", "attempt_not_recorded", {
            "problem": f"{exc.stage} did not answer within {exc.waited:.1f}s",
            "then": "appended when the directory answers, unless runai-entry is PID 1",
            "record": record.to_json()})]
    except (OSError, CheckpointDirUnavailable, HistoryUnavailable) as exc:
        return record, [Note("warning", "attempt_not_recorded", {
            "problem": str(exc), "record": record.to_json()})]
    finally:
        helper.close()


def _at_end(found: Discovery, started_at: float, stop_at: float | None) -> dict[str, Any]:
    """The history's view of the directory at the end (runs in the finishing helper).

    The newest complete checkpoint; the newest one that was there when the stop signal went out
    (the work after it is what the stop-time save had to rescue); the ones this attempt wrote,
    newest first (retention may have removed older ones); and what verification skipped, and
    why, so --inspect can say why an attempt made no progress. Each checkpoint is stat'ed once
    for its write time: discovery stats only when names carry no number.
    """
    fields: dict[str, Any] = {
        "skipped_at_end": tuple(SkippedCheckpoint(s.name, s.reason) for s in found.skipped),
    }
    written, at_stop = [], None
    for candidate in found.candidates:
        mtime = candidate.mtime
        if mtime is None:
            with suppress(OSError):  # removed by retention since the listing
                mtime = os.stat(os.path.join(found.directory, candidate.name)).st_mtime
        entry = Checkpoint(candidate.path, candidate.step, mtime)
        if candidate is found.chosen:
            fields.update(newest_at_end=candidate.path, newest_step=candidate.step,
                          newest_mtime=mtime, newest_digest=_digest(candidate))
        if mtime is None:
            continue
        if mtime >= started_at:
            written.append(entry)
        if stop_at is not None and mtime < stop_at and at_stop is None:
            at_stop = entry
    return {**fields, "newest_at_stop": at_stop, "checkpoints": tuple(written)}


def _stop_epoch(result: Result, clock: Clock) -> float | None:
    if result.stopped_after is None:
        return None
    return clock.epoch + result.stopped_after


def _save_estimate(directory: str) -> SaveEstimate | None:
    """What the library's Checkpointer measured of its saves against the stop budget: written
    by the job into the state directory, so checked as a line of the history is."""
    try:
        with statedir.opened_dir(directory) as dir_fd:
            raw = statedir.read_file(dir_fd, envvars.SAVE_ESTIMATE_FILE, 4096)
        figures = None if raw is None else json.loads(raw)
    except (OSError, ValueError):  # none written (no Checkpointer), or not ours to read
        return None
    return SaveEstimate.from_json(figures)


def _failure(failure: Failure | None, clock: Clock) -> ProcessFailure | None:
    if failure is None:
        return None
    return process_failure(failure, utc_timestamp(clock.epoch + failure.after))


def process_failure(failure: Failure, at: str | None) -> ProcessFailure:
    """The loop's first failure as the attempt record holds it; ``at``: when, as UTC text."""
    return ProcessFailure(failure.pid, describe(failure.returncode), failure.returncode,
                          failure.command, at)


#: What only the checkpoint directory tells, at the end (:func:`_at_end`): absent from the line
#: until then, and from the record returned when the directory did not answer.
_AT_END = frozenset({"skipped_at_end", "newest_at_stop", "checkpoints", "newest_digest",
                     "save_estimate"})


def attempt_record(config: Config, prepared: Prepared, result: Result, clock: Clock,
                   beats: Progress | None) -> AttemptRecord:
    """The attempt as the history stores it (without what only the directory can tell)."""
    chosen = prepared.discovery.chosen if prepared.discovery else None
    stop_at = _stop_epoch(result, clock)
    failure, in_stop = result.first_failure, result.stop_failure
    start = AttemptRecord.from_json(prepared.facts or {}, own=True)  # typed as the record's
    return base_record(
        prepared.attempt,
        prepared.env,
        started_at=utc_timestamp(clock.epoch),
        ended_at=utc_timestamp(time.time()),
        command=tuple(config.command),
        outcome=result.outcome,
        exit_code=result.exit_code,
        returncode=result.returncode,
        simulated=result.simulated,
        ran_for_s=round(result.ran_for, 3),
        stop_signal=signal_name(config.stop_signal),
        stop_timeout_s=config.stop_timeout,
        grace_used_s=None if result.grace_used is None else round(result.grace_used, 3),
        followed=result.followed,
        hang=result.hang,
        stop_at=None if stop_at is None else utc_timestamp(stop_at),
        # The job's own account of its progress, when it beats (the library does).
        first_step_at=None if beats is None else utc_timestamp(clock.epoch_of(beats.first)),
        last_step=None if beats is None else beats.last_step,
        last_step_at=None if beats is None else utc_timestamp(clock.epoch_of(beats.last)),
        first_failure=_failure(failure, clock),
        # The first failure after the stop signal: what a stop that saved nothing died of.
        stop_failure=_failure(in_stop, clock),
        resumed_from=chosen.path if chosen else None,
        resumed_step=chosen.step if chosen else None,
        # With the name and step, the checkpoint's identity: a file rewritten under the same
        # name (Lightning's on_exception.ckpt) is a new checkpoint. Discovery stats the entries
        # exactly when names carry no number, which is when the mtime is needed.
        resumed_mtime=chosen.mtime if chosen else None,
        newest_at_end=None,
        newest_step=None,
        newest_mtime=None,
        **{name: getattr(start, name) for name in prepared.facts or {}},
        absent=_AT_END,
    )
