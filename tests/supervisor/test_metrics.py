"""Prometheus metrics, read back by a real Prometheus server, a real Pushgateway and promtool.

The figures must be the ones ``--inspect --json`` prints: the drill's job
(tests/training_scripts/metrics_job.py) is preempted once, and waits in its second attempt
until the test has looked. Prometheus scrapes the endpoint every second meanwhile; after the
drill, the Pushgateway and the textfile hold what the end of the last attempt pushed and wrote.
The servers are Debian's ``prometheus`` and ``prometheus-pushgateway`` (.ci/run installs them);
the tests that need one skip, saying so, where it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runai_entry.config.options import BY_KEY
from runai_entry.supervisor.exitcodes import Outcome
from runai_entry.training.atomic import atomic_open
from tests.harness.netfs import NetworkMount, in_kernel_wait, network_mount, wait_for_hung_helper
from tests.harness.spawning import ENTRY, TESTS, Child, child_env, free_port, inspect_json

__all__ = ["network_mount"]

JOB = [sys.executable, str(TESTS / "training_scripts" / "metrics_job.py")]
KINDS = ("startup", "lost_work", "stop", "requeue_wait")
T = TypeVar("T")


def needs(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install prometheus "
                    "prometheus-pushgateway; .ci/run does)")
    return path


def until(what: Callable[[], T | None], timeout: float = 60.0, why: str = "") -> T:
    """Poll ``what`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while (found := what()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {why}")
        time.sleep(0.2)
    return found


def get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()  # type: ignore[no-any-return]
    except OSError:  # not up yet
        return None


class Server:
    """A server process of the test's own, SIGKILLed and reaped on the way out."""

    def __init__(self, argv: list[str], ready: str) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        until(lambda: get(ready) if self.proc.poll() is None else b"exited", 60,
              f"{argv[0]} to be ready")
        assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``prometheus(port)``: a Prometheus scraping 127.0.0.1:port every second; its URL."""
    binary = needs("prometheus")
    started: list[Server] = []

    def start(target: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: drill\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n")
        url = f"http://127.0.0.1:{port}"
        started.append(Server([binary, f"--config.file={config}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}"], f"{url}/-/ready"))
        # Ready is not scraping yet (discovery settles first): wait for its first look, so
        # that the drill's first attempt is scraped too.
        until(lambda: query(url, "up") or None, why="Prometheus's first scrape")
        return url

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = needs("prometheus-pushgateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server([binary, f"--web.listen-address=127.0.0.1:{port}",
                     f"--persistence.file={tmp_path / 'pushgateway.data'}"], f"{url}/-/ready")
    yield url
    server.stop()


def query(prometheus: str, expr: str) -> dict[str, float]:
    """An instant query's samples, keyed by the label that tells them apart (or '')."""
    raw = get(f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert raw is not None, expr
    answer = json.loads(raw)
    assert answer["status"] == "success", answer
    found = {}
    for sample in answer["data"]["result"]:
        labels = sample["metric"]
        key = labels.get("kind") or labels.get("outcome") or ""
        found[key] = float(sample["value"][1])
    return found


def parsed(text: str) -> dict[str, dict[str, float]]:
    """An exposition's samples: name → {the kind or outcome label, or '' → value}."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.labels.get("kind") or sample.labels.get("outcome") or ""
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def promtool_check(text: str) -> None:
    promtool = needs("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked


def assert_figures_match(values: dict[str, dict[str, float]], shown: dict[str, Any]) -> None:
    """The goodput, badput and attempt counts of ``--inspect --json``, in the metrics."""
    figures = shown["members"]["0"]
    assert values["runai_entry_goodput_ratio"][""] == pytest.approx(figures["fraction"])
    assert values["runai_entry_wall_seconds"][""] == pytest.approx(figures["wall_s"])
    for kind in KINDS:
        assert values["runai_entry_badput_seconds"][kind] == pytest.approx(
            figures["badput_s"][kind]), kind
    outcomes = dict.fromkeys((o.value for o in Outcome), 0)  # every outcome, from 0
    for attempt in shown["attempts"]:
        outcomes[attempt["outcome"]] += 1
    assert values["runai_entry_attempts_total"] == outcomes
    assert values["runai_entry_checkpoint_step"][""] == shown["next"]["step"]
    # --inspect stats a checkpoint only when its name carries no number: the file says.
    assert values["runai_entry_checkpoint_timestamp_seconds"][""] == pytest.approx(
        os.stat(shown["next"]["path"]).st_mtime)
    stopped = [a for a in shown["attempts"] if a["stop_s"]]
    assert values["runai_entry_grace_used_seconds"][""] == pytest.approx(stopped[-1]["stop_s"])


def drill(ck: Path, go: Path, *options: str) -> Child:
    return Child([*ENTRY, "--checkpoint-dir", str(ck), "--simulate-preempt", "3s",
                  "--simulate-requeue", "1", "--grace-period", "10s", *options, "--", *JOB],
                 env=child_env(RUNAI_ENTRY_LOG_FORMAT="json", METRICS_JOB_GO=str(go)),
                 apart=True)


def documented_queries() -> list[str]:
    """The PromQL blocks of docs/deployment.md."""
    text = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()
    return [block.strip() for block in re.findall(r"```promql\n(.*?)```", text, re.S)]


def blocked(pid: int) -> dict[int, int]:
    """Each thread of ``pid``: its blocked-signal mask."""
    masks = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        masks[int(task)] = int(fields["SigBlk"], 16)
    return masks


def test_prometheus_scrapes_the_drill_and_reads_what_inspect_prints(
        prometheus: Callable[[int], str], tmp_path: Path) -> None:
    """During the second attempt, Prometheus holds the history's figures (as --inspect --json
    computes them), the attempt, and, live, the step and the checkpoint the attempt wrote; the
    endpoint's exposition passes promtool, and every thread of runai-entry blocks the job's
    signals."""
    port = free_port()
    server = prometheus(port)
    ck, go = tmp_path / "ck", tmp_path / "go"
    run = drill(ck, go, "--metrics-port", f"127.0.0.1:{port}")
    try:
        run.expect(r"waiting at step 10", timeout=60)
        until(lambda: query(server, 'runai_entry_attempts_total{outcome="preempted"}') or None,
              why="Prometheus to scrape the second attempt's figures")
        until(lambda: query(server, "runai_entry_step == 10") or None,
              why="Prometheus to scrape the second attempt's last step")
        # Written during the attempt: found by the watching helper, not at the attempt's end.
        until(lambda: query(server, "runai_entry_checkpoint_step == 10") or None,
              why="the checkpoint written during the second attempt")
        shown = inspect_json(ck)
        values = {name: query(server, name) for name in (
            "runai_entry_goodput_ratio", "runai_entry_wall_seconds", "runai_entry_badput_seconds",
            "runai_entry_attempts_total", "runai_entry_checkpoint_step",
            "runai_entry_checkpoint_timestamp_seconds", "runai_entry_grace_used_seconds",
            "runai_entry_attempt", "runai_entry_step", "runai_entry_checkpoint_age_seconds")}
        assert_figures_match(values, shown)
        assert values["runai_entry_attempt"][""] == 2
        assert values["runai_entry_step"][""] == 10  # live: attempt 1 ended at step 5
        assert values["runai_entry_checkpoint_age_seconds"][""] > 0

        # The queries docs/deployment.md gives to paste, on this job: its goodput, no stale
        # checkpoint, and its one preemption (0, then 1).
        queries = documented_queries()
        assert len(queries) == 3, queries
        goodput, stale = (query(server, q) for q in queries[:2])
        assert list(goodput.values()) == [pytest.approx(values["runai_entry_goodput_ratio"][""])]
        assert stale == {}
        # A drill lasts seconds, not days: the subquery looks every second instead of minute.
        per_day = queries[2].replace("[1d:1m]", "[1d:1s]")
        assert per_day != queries[2]
        preemptions = until(lambda: query(server, per_day) or None, why=per_day)
        assert list(preemptions.values()) >= [0.5], preemptions

        exposition = until(lambda: get(f"http://127.0.0.1:{port}/metrics"))
        promtool_check(exposition.decode())
        # The main thread is left out: while it sleeps in sigtimedwait, the kernel shows its
        # mask without the signals it waits for.
        masks = {tid: mask for tid, mask in blocked(run.pid).items() if tid != run.pid}
        assert masks, "no thread beside the main one: where is the endpoint's?"
        for tid, mask in masks.items():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1):
                assert mask & (1 << (signum - 1)), (tid, signal.Signals(signum).name)
        go.touch()
        assert run.wait(timeout=60) == 0, run.stderr
    finally:
        run.kill()


def test_the_pushgateway_and_the_textfile_hold_the_last_attempts_figures(
        pushgateway: str, tmp_path: Path) -> None:
    """At the end of each attempt the figures are pushed and written: after the drill, both
    hold what --inspect --json prints, and the textfile passes promtool."""
    ck, go, textfile = tmp_path / "ck", tmp_path / "go", tmp_path / "textfile" / "job.prom"
    textfile.parent.mkdir()
    go.touch()  # the second attempt need not wait
    run = drill(ck, go, "--metrics-push", pushgateway, "--metrics-file", str(textfile))
    try:
        assert run.wait(timeout=90) == 0, run.stderr
    finally:
        run.kill()
    shown = inspect_json(ck)
    text = textfile.read_text()
    promtool_check(text)
    assert sorted(os.listdir(textfile.parent)) == ["job.prom"]  # no temporary file left
    written = parsed(text)
    assert_figures_match(written, shown)
    pushed_text = get(f"{pushgateway}/metrics")
    assert pushed_text is not None
    pushed = {name: samples for name, samples in parsed(pushed_text.decode()).items()
              if name.startswith("runai_entry_")}
    assert_figures_match(pushed, shown)
    assert pushed["runai_entry_attempt"][""] == written["runai_entry_attempt"][""] == 2
    groups = json.loads(get(f"{pushgateway}/api/v1/metrics") or b"{}")["data"]
    assert [g["labels"] for g in groups] == [{"job": "runai-entry", "member": "0"}]


def test_a_gateway_that_never_answers_does_not_hold_the_exit(tmp_path: Path) -> None:
    """A gateway that accepts the connection and never answers: the push is given up, said in
    one warning, and the preempted job still exits with the requeue code."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        run = Child([*ENTRY, "--checkpoint-dir", str(tmp_path), "--metrics-push", url,
                     "--grace-period", "10s", "--", *JOB],
                    env=child_env(RUNAI_ENTRY_LOG_FORMAT="json",
                                  METRICS_JOB_GO=str(tmp_path / "go")), apart=True)
        try:
            run.expect(r"saved 5", timeout=60)
            run.signal(signal.SIGTERM)
            try:  # the platform's contract, not a speed: its SIGKILL comes at the grace period
                code = run.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail("still pushing when the platform's SIGKILL would have come")
            assert code == 1, run.stderr
        finally:
            run.kill()
    warning = run.event("metrics_not_exported")
    assert warning["to"] == url and "did not answer" in warning["problem"], warning


def test_a_hung_checkpoint_mount_reaches_neither_the_endpoint_nor_the_exit(
        network_mount: NetworkMount, tmp_path: Path) -> None:
    """The checkpoint directory's server stops answering while the job runs: the watching
    helper hangs on it, but no thread of runai-entry does; scrapes still answer, and the
    preemption still ends in the requeue code with the textfile written."""
    ck, textfile, port = network_mount.mount / "ck", tmp_path / "job.prom", free_port()
    ck.mkdir()
    (ck / "step-00000001.pt").write_bytes(b"\x80\x04N.")  # a pickle: verification passes it
    run = Child([*ENTRY, "--checkpoint-dir", str(ck), "--metrics-port", f"127.0.0.1:{port}",
                 "--metrics-file", str(textfile), "--grace-period", "10s", "--", *JOB],
                env=child_env(RUNAI_ENTRY_LOG_FORMAT="json",
                              METRICS_JOB_GO=str(tmp_path / "go")), apart=True)
    endpoint = f"http://127.0.0.1:{port}/metrics"
    try:
        run.expect(r"waiting at step 6", timeout=60)
        until(lambda: b"runai_entry_attempts_total{" in (get(endpoint) or b"") or None,
              why="the history's figures on the endpoint")
        network_mount.freeze()
        wait_for_hung_helper(run.pid)  # the watcher's next look
        scraped = get(endpoint)
        assert scraped is not None and b"runai_entry_checkpoint_age_seconds{" in scraped
        assert in_kernel_wait(run.pid) == []
        run.signal(signal.SIGTERM)
        try:  # the platform's contract, not a speed: its SIGKILL comes at the grace period
            code = run.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("still running when the platform's SIGKILL would have come")
        assert code == 1, run.stderr
    finally:
        run.kill()
    # What was known when the mount stopped answering: the checkpoint resumed from.
    assert parsed(textfile.read_text())["runai_entry_checkpoint_step"][""] == 1


def test_runai_entry_without_metrics_options_never_imports_prometheus_client() -> None:
    """Start-up of ``runai-entry -- cmd`` is unchanged: the library is not even loaded."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "runai_entry", "--",
                           "true"], env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "runai_entry.cli" in done.stderr  # the import trace is there to look at
    assert "prometheus" not in done.stderr


def test_the_textfiles_temporary_name_is_not_read_by_node_exporter(tmp_path: Path) -> None:
    """node-exporter reads every *.prom file, hidden ones too: while the file is written, its
    temporary name must not end in .prom."""
    with atomic_open(tmp_path / "job.prom", "wb", temp_suffix=".tmp") as f:
        f.write(b"runai_entry_attempt 1\n")
        (temporary,) = os.listdir(tmp_path)
    assert temporary.endswith(".prom.tmp"), temporary
    assert os.listdir(tmp_path) == ["job.prom"]


@pytest.mark.parametrize(("text", "address"), [
    ("9100", ("0.0.0.0", 9100)), ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("[::1]:9100", ("::1", 9100)), (":9100", ("0.0.0.0", 9100)), (9100, ("0.0.0.0", 9100))])
def test_a_metrics_port_is_a_port_or_host_and_port(text: object, address: tuple[str, int]) -> None:
    assert BY_KEY["metrics_port"].parse(text) == address


@pytest.mark.parametrize(("args", "said"), [
    (["--metrics-port", "0"], "is not a port"), (["--metrics-port", "65536"], "is not a port"),
    (["--metrics-port", "host:"], "is not a port"),
    (["--metrics-push", "ftp://gateway:9091"], "is not a Pushgateway URL"),
    (["--metrics-push", "http://"], "is not a Pushgateway URL"),
    (["--metrics-file", ""], "an empty value")])
def test_a_bad_metrics_option_is_one_line_and_exit_2(args: list[str], said: str,
                                                     tmp_path: Path) -> None:
    done = subprocess.run([*ENTRY, "--checkpoint-dir", str(tmp_path), *args, "--", "true"],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"runai-entry: error: {args[0]}: ") and said in done.stderr


def test_metrics_need_the_checkpoint_directory() -> None:
    done = subprocess.run([*ENTRY, "--metrics-file", "/tmp/x.prom", "--", "true"],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--metrics-file needs --checkpoint-dir" in done.stderr, done.stderr


def pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]]
    return [spec["template"] for spec in doc["spec"]["pytorchReplicaSpecs"].values()]


@pytest.mark.parametrize("manifest", ["job.yaml", "pytorchjob.yaml"])
def test_the_scrape_annotations_name_the_port_runai_entry_serves_on(manifest: str) -> None:
    """A pod annotated for scraping serves there: the annotated port is the container's port
    named ``metrics`` and the one runai-entry is told (flag or variable)."""
    import yaml

    doc = yaml.safe_load((Path(__file__).parents[2] / "deploy" / manifest).read_text())
    for template in pod_templates(doc):
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        port = int(annotations["prometheus.io/port"])
        (container,) = template["spec"]["containers"]
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        told = {e["name"]: e["value"] for e in container.get("env", [])}.get(
            "RUNAI_ENTRY_METRICS_PORT")
        argv = container.get("command", [])
        if "--metrics-port" in argv:
            told = argv[argv.index("--metrics-port") + 1]
        assert told is not None and BY_KEY["metrics_port"].parse(told).port == port
