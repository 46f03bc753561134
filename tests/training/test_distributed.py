"""torchrun, 2 ranks on gloo: SIGTERM to one rank only, both stop at the same step, no hang."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch

from tests.training_scripts.procs import child_env, free_port, script, spawn

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _torchrun(port: int, *args: str) -> list[str]:
    return [
        *TORCHRUN,
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--max-restarts",
        "0",
        script("ddp_stop.py"),
        *args,
    ]


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_at_the_same_step(tmp_path: Path) -> None:
    env = child_env(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    with spawn(_torchrun(free_port(), "--ckpt-dir", str(tmp_path)), env=env) as run:
        pids = {}
        for _ in range(2):
            match = run.expect(r"rank (\d) pid (\d+)", timeout=60)
            pids[int(match.group(1))] = int(match.group(2))
        run.expect(r"rank 1 step 5$", timeout=60)
        os.kill(pids[1], signal.SIGTERM)  # one worker only: not torchrun, not rank 0
        rc = run.wait(60)
        out = run.output()
    stopped = {
        int(m.group(1)): (int(m.group(2)), m.group(3))
        for m in re.finditer(r"rank (\d) stopped at (\d+) signal=(SIG[A-Z0-9]+|None)", out)
    }
    assert rc == 0, out[-3000:]
    assert set(stopped) == {0, 1}, out[-3000:]
    assert stopped[0][0] == stopped[1][0]
    assert stopped[1][1] == "SIGTERM" and stopped[0][1] == "None"  # rank 0 never got it
    step = stopped[0][0]
    assert os.listdir(tmp_path) == [f"ckpt-{step:06d}.pt"]
    state = torch.load(tmp_path / f"ckpt-{step:06d}.pt", weights_only=True)
    assert state["step"] == step and "0.weight" in state["model"]


@pytest.mark.slow
def test_any_rank_gives_every_rank_the_same_answer(tmp_path: Path) -> None:
    """A decision true on one rank only (a time-based save) is true on both after any_rank."""
    env = child_env(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    argv = _torchrun(free_port())
    argv[argv.index(script("ddp_stop.py"))] = script("ddp_any_rank.py")
    with spawn(argv, env=env) as run:
        rc = run.wait(60)
        out = run.output()
    assert rc == 0, out[-3000:]
    agreed = re.findall(r"rank (\d) mine=(\w+) agreed=(\w+)", out)
    assert sorted(agreed) == sorted([
        ("0", "True", "True"), ("1", "False", "True"),
        ("0", "False", "False"), ("1", "False", "False"),
        ("0", "False", "True"), ("1", "True", "True"),
    ])
    # destroy_process_group() freed the group: nothing of the library's kept it for the
    # interpreter's shutdown, where gloo's threads abort the worker (exit -6) after a good run.
    alive = re.findall(r"rank (\d) groups_alive (.*)", out)
    assert sorted(alive) == [("0", "default=0 others=0"), ("1", "default=0 others=0")], out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 0.1.0's API, on purpose
def test_any_rank_without_a_process_group_is_the_local_value() -> None:
    """Outside torch.distributed, any_rank returns what it was given."""
    from runai_entry.training.legacy import any_rank

    assert any_rank(True) is True and any_rank(False) is False


@pytest.mark.slow
def test_dcp_checkpoint_is_published_whole_and_loads_back(tmp_path: Path) -> None:
    """A DCP save by 2 ranks appears under its final name complete, twice over, and loads back.

    No temporary directory is left, discovery sees a complete DCP layout, and the model and
    optimizer loaded into fresh objects equal the ones saved.
    """
    from runai_entry.checkpoints import discover

    env = child_env(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    argv = _torchrun(free_port())
    argv[argv.index(script("ddp_stop.py"))] = script("ddp_dcp.py")
    argv.append(str(tmp_path))
    with spawn(argv, env=env) as run:
        rc = run.wait(120)
        out = run.output()
    assert rc == 0, out[-3000:]
    loaded = re.findall(r"rank (\d) loaded step=(\d+) epoch=0 weights_equal=(\w+) "
                        r"optimizer_equal=(\w+)", out)
    assert sorted(loaded) == [("0", "6", "True", "True"), ("1", "6", "True", "True")]
    # DCP's saves left no group of their own alive past destroy_process_group().
    assert re.findall(r"rank \d groups_alive default=\d others=(\d+)", out) == ["0", "0"], out
    assert os.listdir(tmp_path) == ["step-00000006"]  # no temporary or old directory left
    files = os.listdir(tmp_path / "step-00000006")
    assert ".metadata" in files and sum(f.endswith(".distcp") for f in files) == 2
    found = discover(tmp_path, timeout=None)
    assert found.chosen is not None and found.chosen.layout == "dcp"
    assert found.chosen.step == 6


# -- runai_entry.training.dist ---------------------------------------------------------------------


def test_an_nccl_only_group_gets_a_cpu_group_of_its_own() -> None:
    """The agreement must not run on a group that reduces CUDA tensors only (NCCL): reading
    its result would wait for every kernel queued before it."""
    from runai_entry.training.dist import needs_own_cpu_group

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert needs_own_cpu_group([cuda]) is True  # nccl
    assert needs_own_cpu_group([cpu]) is False  # gloo
    assert needs_own_cpu_group([cpu, cuda]) is False  # "cpu:gloo,cuda:nccl"


def test_without_a_process_group_everything_is_local() -> None:
    from runai_entry.training.dist import agree, on_rank0, outcome, rank, world_size
    from runai_entry.training.errors import CheckpointWriteFailed

    assert (rank(), world_size()) == (0, 1)
    assert agree(True, False) == (True, False)
    assert on_rank0(lambda: 7, "answering") == 7
    with pytest.raises(CheckpointWriteFailed, match=r"^saving x failed: disk on fire$") as caught:
        outcome(OSError("disk on fire"), "saving x", kind=CheckpointWriteFailed)
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.slow
@pytest.mark.parametrize("own_group", [False, True])
def test_the_collectives_give_every_rank_the_same_answer(own_group: bool) -> None:
    """2 gloo ranks: the agreement is a MAX of each flag; a failure on one rank raises the same
    type with the same message (the failing rank's) on both; rank 0's action, heard by both.
    ``own_group``: as under an NCCL-only default group, on a gloo group made once. And an FSDP2
    model with the file backend is refused in one line naming backend="dcp"."""
    env = child_env(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    argv = _torchrun(free_port())
    argv[argv.index(script("ddp_stop.py"))] = script("dist_probe.py")
    if own_group:
        argv.append("--own-group")
    with spawn(argv, env=env) as run:
        rc = run.wait(120)
        out = run.output()
    assert rc == 0, out[-3000:]
    lines: dict[str, set[str]] = {}
    for m in re.finditer(r"^rank (\d) (\w+) (.*)$", out, re.M):
        lines.setdefault(m.group(2), set()).add(f"{m.group(1)}:{m.group(3)}")

    def both(check: str, text: str) -> bool:
        return lines.get(check) == {f"0:{text}", f"1:{text}"}

    assert both("agree", "(True, False, True)"), lines
    assert both("own_group", str(own_group)), lines
    assert both("outcome", "CheckpointWriteFailed: saving x failed on rank 1: "
                           "[Errno 28] No space left on device"), lines
    assert both("outcome_ok", "returned")
    assert both("on_rank0", "CheckpointSaveFailed: writing y failed on rank 0: bad header"), lines
    assert lines["on_rank0_value"] == {"0:42", "1:None"}
    assert both("gathered", "[{'r': 0}, {'r': 1}]"), lines
    # The library's own gloo group (--own-group) did not outlive destroy_process_group(). FSDP
    # keeps the default group itself; ddp_any_rank.py, without FSDP, checks that one.
    assert lines.get("groups_alive") in ({"0:default=0 others=0", "1:default=0 others=0"},
                                         {"0:default=1 others=0", "1:default=1 others=0"}), lines
    assert both("fsdp_file", "ConfigError: the model is sharded (FSDP or DTensor): one rank's "
                             "state_dict() does not hold it; use "
                             'Checkpointer(..., backend="dcp")'), lines
