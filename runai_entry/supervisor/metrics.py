"""Prometheus metrics: what the attempts cost, as a scrape endpoint, a textfile and a push.

Imported only with ``--metrics-port``, ``--metrics-file`` or ``--metrics-push`` (it loads
``prometheus_client``, a heavy import, after the job has started: docs/benchmarks.md):
``runai-entry -- cmd`` never pays.

The figures are the ones ``--inspect --json`` prints, computed by the same functions
(:mod:`runai_entry.history.goodput`) from the same history records, for this member (label
``member``):

- From the history, read once per attempt in a helper process started with the job (the
  checkpoint directory may be a mount that stopped answering) and completed at the attempt's end
  with its own record: attempts by outcome, goodput and badput, the grace used at the last stop.
- The newest complete checkpoint: the one discovery chose at the start; then, while the job
  runs, what a watching helper process finds every :data:`LOOK_EVERY` seconds (the same
  discovery, reported through the helper's memfd, which a scrape reads without any I/O); then
  the newest at the end. Its age is counted at each scrape from its write time. Looking from a
  thread instead would be I/O on the checkpoint directory in runai-entry itself: a hung mount
  would freeze that thread for good, and a process with a frozen thread cannot exit.
- The job's last step and mean step rate: live, from its heartbeats (tmpfs, never a mount).

Threads: the endpoint is prometheus_client's HTTP server thread, started after ``main`` blocked
the handled signals, so it and the threads it starts per request inherit the mask and every
signal still goes to the supervisor's ``sigtimedwait``. A scrape shares only the GIL with the
loop (a few milliseconds of Python, switched every 5 ms), and a lock with the attempt's start and
end, never with the loop itself. The textfile and the push run in helper processes
(:mod:`runai_entry.supervisor.storage_io`) against one deadline, bounded by what is left of the
grace period, so neither a hung mount nor a dead gateway holds the exit code the platform is
waiting for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Everything the helpers run is imported here, not in them: a fork may copy the import lock
# while a scrape's thread holds it, and the helper would wait for it for ever.
from runai_entry.config.loading import Config
from runai_entry.core.atomicfile import atomic_write_bytes
from runai_entry.core.attempt_record import AttemptRecord, parse_time
from runai_entry.core.errors import RunaiEntryError
from runai_entry.core.outcome import Outcome
from runai_entry.core.signals import handled_signals
from runai_entry.history.goodput import attempt_figures, mean_step_time, member, per_member
from runai_entry.history.store import HistoryUnavailable, member_of, platform_ids, read_history
from runai_entry.supervisor import storage_io
from runai_entry.supervisor.before_and_after import find_checkpoints
from runai_entry.supervisor.heartbeat_dir import Progress, progress

if TYPE_CHECKING:
    from runai_entry.supervisor.before_and_after import Prepared
    from runai_entry.supervisor.logs import Logger

PREFIX = "runai_entry_"
#: The Pushgateway's ``job`` label (the job's own name is the label ``job_name``: ``job`` is
#: Prometheus's scrape job).
PUSH_JOB = "runai-entry"
#: The most the textfile and the push may take at the end of an attempt, together.
END_TIMEOUT = 3.0
#: How often the watching helper looks for a newer checkpoint while the job runs: a listing
#: and the newest entry's verification (headers and trailers) on the checkpoint directory.
LOOK_EVERY = 10.0
#: Label name ← the platform variables it is read from, first set wins (history.ID_SOURCES).
#: Per-pod ids (pod name, uid, node) are left out: a requeued job gets new ones, and its
#: series would break at every preemption; Prometheus's own discovery adds them when scraping.
LABEL_SOURCES = {
    "job_name": ("RUNAI_JOB_NAME", "JOB_NAME"),
    "job_uuid": ("JOB_UUID",),
    "project": ("RUNAI_PROJECT",),
    "namespace": ("POD_NAMESPACE",),
}

_SIGNALS = handled_signals()
#: The one set of exporters of this process: the drill's attempts share its endpoint.
_current: Metrics | None = None


def metrics_for(config: Config, environ: Mapping[str, str]) -> Metrics:
    """This process's :class:`Metrics`, made at the first attempt."""
    global _current
    if _current is None:
        _current = Metrics(config, environ)
    return _current


def labels(environ: Mapping[str, str]) -> dict[str, str]:
    """The series' labels: the job's ids (empty when unset) and this member."""
    ids = platform_ids(environ)
    found = {name: next((ids[s] for s in sources if s in ids), "")
             for name, sources in LABEL_SOURCES.items()}
    return {**found, "member": member_of(environ)}


class Metrics(Collector):
    """The figures of this member, kept current by the attempts and read by every exporter."""

    def __init__(self, config: Config, environ: Mapping[str, str]) -> None:
        self.config = config
        self.labels = labels(environ)
        self.member = self.labels["member"]
        self._lock = threading.Lock()  # the main thread's updates against a scrape's reads
        self._records: list[AttemptRecord] | None = None  # None: the history is not known
        self._reading: storage_io.Helper[list[AttemptRecord]] | None = None
        self._watching: storage_io.Helper[None] | None = None  # the newest checkpoint, live
        self._attempt: int | None = None
        self._checkpoint: tuple[int | None, float | None] | None = None  # step, write time
        self._heartbeats: str | None = None
        self._origin: int | None = None  # the step resumed from: the first beat is origin + 1
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.endpoint: str | None = None
        self._unread: str | None = None  # why the history could not be read

    # -- the main thread ------------------------------------------------------------------------

    def serve(self, log: Logger) -> None:
        """Start the scrape endpoint once (the drill's attempts share it); a port that cannot be
        bound is a warning: the job runs on, unwatched, rather than lose its place in the queue."""
        if self.config.metrics_port is None or self.endpoint is not None:
            return
        from prometheus_client import start_http_server

        host, port = self.config.metrics_port
        try:
            start_http_server(port, host, self.registry)
        except OSError as exc:
            log.warning("metrics_not_served", address=f"{host}:{port}",
                        problem=exc.strerror or str(exc),
                        consequence="no scrape endpoint; the job runs on")
            return
        self.endpoint = f"http://{host}:{port}/metrics"
        log.info("metrics_served", endpoint=self.endpoint)

    def attempt_started(self, prepared: Prepared, heartbeats: str | None) -> None:
        """The job has started: what the start knows, and the history read in a helper."""
        directory = self.config.checkpoint_dir
        chosen = prepared.discovery.chosen if prepared.discovery else None
        with self._lock:
            self._attempt, self._heartbeats = prepared.attempt, heartbeats
            self._origin = 0 if chosen is None else chosen.step
            if chosen is not None:
                self._checkpoint = (chosen.step, chosen.mtime)
            if directory is not None and self._reading is None:
                self._reading = storage_io.start(lambda stage: read_history(directory),
                                                 "metrics: attempt history")
            if directory is not None:
                config = self.config
                self._watching = storage_io.start(lambda stage: _watch(directory, config, stage),
                                                  "metrics: newest checkpoint")

    def attempt_ended(self, record: AttemptRecord | None, deadline: float | None,
                      log: Logger) -> None:
        """The attempt is recorded: add its line, then write the textfile and push, within
        ``deadline`` (monotonic; None: not during a stop) and :data:`END_TIMEOUT`."""
        end = time.monotonic() + END_TIMEOUT
        end = end if deadline is None else min(end, deadline)
        reading = self._reading
        exporting = self.config.metrics_file is not None or self.config.metrics_push is not None
        if reading is not None and not reading.done and exporting:  # else: no one to wait for
            try:
                storage_io.await_result(reading, end, _SIGNALS)
            except (storage_io.HelperTimeout, OSError) as exc:
                log.warning("metrics_history_unread", problem=str(exc),
                            consequence="goodput and attempt counts are left out")
        with self._lock:
            self._take_reading()
            self._take_watch()
            if self._watching is not None:
                self._watching.kill()
                self._watching.close()
                self._watching = None
            self._heartbeats = None  # removed with the attempt: its last beats are in ``record``
            if record is not None and self._records is not None:
                self._records.append(record)
            if record is not None and record.newest_at_end is not None:
                self._checkpoint = (record.newest_step, record.newest_mtime)
            unread, self._unread = self._unread, None
        if unread is not None:
            log.warning("metrics_history_unread", problem=unread,
                        consequence="goodput and attempt counts are left out")
        if exporting:
            self._export(end, log)

    def _take_reading(self) -> None:
        """Under the lock: the history, once its helper is gone (the supervisor reaps it)."""
        reading = self._reading
        if reading is None or not reading.done:
            return
        self._reading = None
        try:
            self._records = reading.result()
        except (OSError, HistoryUnavailable, RuntimeError) as exc:  # unreadable: unknown
            self._records = None
            self._unread = str(exc)
        finally:
            reading.close()

    def _take_watch(self) -> None:
        """Under the lock: what the watching helper last found, if anything."""
        if self._watching is not None:
            newest = _newest(self._watching.stage())
            if newest is not None:
                self._checkpoint = newest

    def _export(self, end: float, log: Logger) -> None:
        """The textfile and the push, each in a helper, both against ``end``."""
        if end <= time.monotonic():  # the history's line took what was left of the grace
            log.warning("metrics_not_exported", to=self.config.metrics_file or
                        self.config.metrics_push, problem="no time left in the grace period")
            return
        # Collected here, not in the helpers: a fork copies a lock a scrape may hold.
        snapshot = _Snapshot(list(self.collect()))
        started: list[tuple[str, storage_io.Helper[None]]] = []
        path, url = self.config.metrics_file, self.config.metrics_push
        if path is not None:
            data = generate_latest(snapshot.registry)
            started.append((path, storage_io.start(lambda stage: _write(path, data),
                                                   "metrics textfile")))
        if url is not None:
            key = {k: v for k, v in self.labels.items() if v}
            started.append((url, storage_io.start(
                lambda stage: push_to_gateway(url, PUSH_JOB, snapshot.registry, key,
                                              max(0.1, end - time.monotonic())),
                "metrics push")))
        for where, helper in started:
            try:
                storage_io.await_result(helper, end, _SIGNALS)
            except (storage_io.HelperTimeout, OSError) as exc:
                log.warning("metrics_not_exported", to=where, problem=str(exc))
            finally:
                helper.kill()
                helper.close()

    # -- any thread (a scrape) ------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._take_reading()
            self._take_watch()
            records = None if self._records is None else list(self._records)
            attempt, checkpoint = self._attempt, self._checkpoint
            heartbeats, origin = self._heartbeats, self._origin
        names, values = list(self.labels), list(self.labels.values())

        def gauge(name: str, text: str, value: float | None) -> Iterator[Metric]:
            if value is not None:
                family = GaugeMetricFamily(PREFIX + name, text, labels=names)
                family.add_metric(values, value)
                yield family

        yield from gauge("attempt", "This member's attempt number (1 at its first start).",
                         attempt)
        if checkpoint is not None:
            step, written = checkpoint
            yield from gauge("checkpoint_step", "Step of the newest complete checkpoint.", step)
            yield from gauge("checkpoint_timestamp_seconds", "When the newest complete "
                             "checkpoint was written (Unix time).", written)
            yield from gauge("checkpoint_age_seconds", "Seconds since the newest complete "
                             "checkpoint was written.",
                             None if written is None else max(0.0, time.time() - written))
        beats = progress(heartbeats) if heartbeats is not None else None
        step, rate = _steps(records or [], self.member, beats, origin)
        yield from gauge("step", "The job's last step, from its heartbeats.", step)
        yield from gauge("steps_per_second", "The job's mean step rate in its latest attempt, "
                         "from its heartbeats.", rate)
        yield from gauge("grace_period_seconds", "The grace period the platform allows "
                         "between SIGTERM and SIGKILL.", self.config.grace_period)
        if records is not None:
            yield from self._from_history(records, names, values, gauge)

    def _from_history(self, records: list[AttemptRecord], names: list[str],
                      values: list[str],
                      gauge: Callable[[str, str, float | None], Iterator[Metric]]
                      ) -> Iterator[Metric]:
        mine = [r for r in records if member(r) == self.member]
        outcomes = CounterMetricFamily(PREFIX + "attempts", "Attempts of this member that "
                                       "ended, by outcome (preempted, completed, failed, ...).",
                                       labels=[*names, "outcome"])
        # Every outcome from 0: a series that appears only at the first preemption would make
        # that preemption invisible to increase().
        counts = dict.fromkeys((outcome.value for outcome in Outcome), 0)
        for r in mine:
            name = r.outcome_text or "unknown"
            counts[name] = counts.get(name, 0) + 1
        for outcome, n in sorted(counts.items()):
            outcomes.add_metric([*values, outcome], n)
        yield outcomes
        grace = next((r.grace_used_s for r in reversed(mine) if r.grace_used_s is not None),
                     None)
        yield from gauge("grace_used_seconds", "Seconds from the stop signal to the last job "
                         "process gone, at this member's last stop.", grace)
        figures = per_member(attempt_figures(records)).get(self.member)
        if figures is None:
            return
        shown = figures.as_dict()  # the figures exactly as --inspect --json prints them
        yield from gauge("goodput_ratio", "Productive time over wall time (--inspect's "
                         "goodput).", shown["fraction"])
        yield from gauge("productive_seconds", "Seconds of productive work.",
                         shown["productive_s"])
        yield from gauge("wall_seconds", "Seconds from the first start to the last end.",
                         shown["wall_s"])
        badput = GaugeMetricFamily(PREFIX + "badput_seconds", "Seconds lost, by kind: "
                                   "startup, lost_work, stop, requeue_wait.",
                                   labels=[*names, "kind"])
        for kind, seconds in shown["badput_s"].items():
            badput.add_metric([*values, kind], seconds)
        yield badput


class _Snapshot(Collector):
    """Metrics collected once, in a registry of their own for the helpers to expose."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _steps(records: Sequence[AttemptRecord], name: str, beats: Progress | None,
           origin: int | None) -> tuple[int | None, float | None]:
    """The last step and the mean step rate: live from ``beats``, else this member's last
    attempt that beat. Both clocks cancel out: a rate is a difference."""
    if beats is not None and beats.last_step is not None:
        per_step = None if origin is None else mean_step_time(beats.first, beats.last, origin,
                                                              beats.last_step)
        return beats.last_step, None if per_step is None else 1.0 / per_step
    for r in reversed(records):
        last = r.last_step
        if member(r) != name or last is None:
            continue
        first_at, last_at = parse_time(r.first_step_at), parse_time(r.last_step_at)
        start = 0 if r.resumed_from is None else r.resumed_step
        per_step = (None if first_at is None or last_at is None or start is None
                    else mean_step_time(first_at, last_at, start, last))
        return last, None if per_step is None else 1.0 / per_step
    return None, None


def _watch(directory: str, config: Config, stage: Callable[[str], None]) -> None:
    """The watching helper: every :data:`LOOK_EVERY` seconds, the newest complete checkpoint
    (the one definition: before_and_after.find_checkpoints) as its stage, ``newest STEP MTIME``."""
    while True:
        time.sleep(LOOK_EVERY)  # the start has just looked
        try:
            chosen = find_checkpoints(directory, config, max_candidates=1).chosen
            if chosen is None:
                continue
            mtime = chosen.mtime
            if mtime is None:
                mtime = os.stat(chosen.path).st_mtime
        except (OSError, RunaiEntryError):  # gone, or unreadable now: look again later
            continue
        stage(f"newest {chosen.step} {mtime!r}")


def _newest(stage: str) -> tuple[int | None, float | None] | None:
    """The watching helper's stage as (step, write time); None before it found one."""
    parts = stage.split()
    if len(parts) != 3 or parts[0] != "newest":
        return None
    try:
        return (None if parts[1] == "None" else int(parts[1])), float(parts[2])
    except ValueError:  # cut short: a stage is 256 bytes at most
        return None


def _write(path: str, data: bytes) -> None:
    """The textfile, atomically: node-exporter must never read half of it."""
    # The collector reads every *.prom file, hidden ones too: a temporary name ending in the
    # final one would be read half-written, or whole beside the old file (duplicate series
    # fail node-exporter's whole scrape).
    atomic_write_bytes(path, data, temp_suffix=".tmp")
