"""PyTorch: a run preempted by real SIGTERMs and resumed ends bit-identical to a straight one."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
import torch

from runai_entry.training.atomic import atomic_write
from runai_entry.training.continuity import ResumableSampler, rng_state, unwrap
from runai_entry.training.legacy import DistributedStop, load_training_state, save_training_state
from runai_entry.training.stop import StopFlag
from tests.training_scripts.procs import PYTHON, child_env, script, spawn

STEPS = 60


def _train(ckpt_dir: Path, out: Path, stop_after: int | None = None) -> tuple[int, list[str]]:
    argv = [
        PYTHON,
        script("train_torch.py"),
        "--ckpt-dir",
        str(ckpt_dir),
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--step-delay",
        "0.01",
    ]
    # The script runs 0.1.0's save_training_state / load_training_state on purpose (they still
    # work): their DeprecationWarning would come first in the lines read below.
    with spawn(argv, env=child_env(PYTHONWARNINGS="ignore::DeprecationWarning")) as child:
        if stop_after is not None:
            child.expect(rf"^step {stop_after}$")
            child.proc.send_signal(signal.SIGTERM)
        rc = child.wait(60)
        return rc, child.lines


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    state = torch.load(path, weights_only=True)
    return {k: v.numpy().tobytes() for k, v in state.items()}


@pytest.mark.slow
def test_preempted_and_resumed_run_is_bit_identical(tmp_path: Path) -> None:
    seed = 7
    rng = random.Random(seed)
    stops = sorted(rng.sample(range(3, STEPS - 5), 3))
    print(f"resume-exactness seed {seed}: SIGTERM after steps {stops}")

    straight = tmp_path / "straight.pt"
    rc, lines = _train(tmp_path / "a", straight)
    assert rc == 0 and lines[-1] == "finished"

    ckpts, resumed = tmp_path / "b", tmp_path / "resumed.pt"
    last_stop = 0
    for stop in stops:
        rc, lines = _train(ckpts, resumed, stop_after=stop)
        stopped = [int(line.split()[-1]) for line in lines if line.startswith("stopped at")]
        assert rc == 1 and len(stopped) == 1 and stopped[0] >= stop, lines[-5:]
        if last_stop:
            assert f"resumed from ckpt-{last_stop:06d}.pt at step {last_stop}" in lines[0]
        last_stop = stopped[0]
    rc, lines = _train(ckpts, resumed)
    assert rc == 0 and f"resumed from ckpt-{last_stop:06d}.pt at step {last_stop}" in lines[0]
    a, b = _tensor_bytes(straight), _tensor_bytes(resumed)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 0.1.0's API, on purpose
def test_control_without_rng_restore_differs(tmp_path: Path) -> None:
    """Dropout draws from the torch RNG: restoring everything but it must change the result."""

    def run(restore_rng: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.ones(2, 4)
        for step in range(1, 7):
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
            if step == 3:
                save_training_state(tmp_path / "c.pt", model=model, optimizer=opt, step=step)
                torch.manual_seed(123)  # a fresh process would have a different RNG state
                load_training_state(tmp_path / "c.pt", model=model, optimizer=opt, rng=restore_rng)
        first: torch.nn.Linear = model[0]  # type: ignore[assignment]
        return first.weight.detach().clone()

    assert torch.equal(run(True), run(True))
    assert not torch.equal(run(True), run(False))


class TestTorchHelpers:
    def test_state_loads_with_weights_only_and_unwraps_wrappers(self, tmp_path: Path) -> None:
        import numpy as np

        np.random.seed(5)
        model = torch.nn.DataParallel(torch.nn.Linear(3, 2))
        path = tmp_path / "s.pt"
        save_training_state(path, model=model, step=11, epoch=2, extra={"tokens": 1234})
        raw = torch.load(path, weights_only=True)  # no allow-listing needed
        assert set(raw["model"]) == {"weight", "bias"}  # no "module." prefix
        assert set(raw["rng"]) >= {"python", "torch", "numpy"}
        expected = np.random.rand()
        np.random.seed(99)
        plain = torch.nn.Linear(3, 2)
        state = load_training_state(path, model=plain)
        assert (state.step, state.epoch, state.extra) == (11, 2, {"tokens": 1234})
        assert np.random.rand() == expected
        assert torch.equal(plain.weight, unwrap(model).get_parameter("weight"))

    def test_missing_optimizer_state_is_an_error(self, tmp_path: Path) -> None:
        model = torch.nn.Linear(2, 2)
        save_training_state(tmp_path / "m.pt", model=model, step=1)
        with pytest.raises(ValueError, match="optimizer"):
            load_training_state(
                tmp_path / "m.pt", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1)
            )
        atomic_write(tmp_path / "other.pt", lambda p: torch.save({"x": 1}, p))
        with pytest.raises(ValueError, match="not written by"):
            load_training_state(tmp_path / "other.pt", model=model)

    def test_resumable_sampler_resumes_mid_epoch(self) -> None:
        sampler = ResumableSampler(10, seed=3)
        sampler.set_epoch(2)
        full = list(sampler)
        sampler.set_position(2, 4)
        assert len(sampler) == 6 and list(sampler) == full[4:]
        assert sampler.state_dict() == {"epoch": 3, "start": 0}  # a finished pass moves on
        sampler.set_epoch(2)
        assert list(sampler) == full  # the offset applied to one pass only
        sampler.set_epoch(3)
        assert list(sampler) != full and sorted(sampler) == list(range(10))
        shards = [list(ResumableSampler(10, seed=3, num_replicas=3, rank=r)) for r in range(3)]
        assert all(len(s) == 4 for s in shards) and set().union(*shards) == set(range(10))

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 0.1.0's API, on purpose
    def test_distributed_stop_without_process_group_is_the_local_flag(self) -> None:
        flag = StopFlag(timeout=None)
        stop = DistributedStop(flag, every=5)
        assert not stop.should_stop()
        flag.request()
        assert stop.should_stop() and bool(stop)
        assert "torch" in rng_state()
