"""``background_copy=True``: the parameters and optimizer state are copied behind the training
thread, the next ``optimizer.step()`` waits for the copy, and a change elsewhere is caught."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from runai_entry.core.errors import ConfigError
from runai_entry.training._io import tensorfile
from runai_entry.training.checkpointer import Checkpointer
from tests.harness.flags import quiet_flag


def _setup(width: int = 512) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    # BatchNorm: a forward pass changes its statistics, so they must be copied before step()
    # returns; the Linear weights only change in optimizer.step().
    model = torch.nn.Sequential(*(m for _ in range(4) for m in (
        torch.nn.Linear(width, width), torch.nn.BatchNorm1d(width))))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer, torch.randn(32, width)


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> None:
    optimizer.zero_grad()
    model(batch).square().mean().backward()
    optimizer.step()


def _now(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What a checkpoint of this moment must hold: the model and optimizer, cloned."""
    optim = optimizer.state_dict()["state"]
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": {i: {k: v.clone() for k, v in s.items()} for i, s in optim.items()}}


def _holds(path: Path, expected: dict[str, Any]) -> bool:
    saved = tensorfile.load(str(path))
    model_ok = all(torch.equal(saved["model"][k], v) for k, v in expected["model"].items())
    optim = saved["optimizer"]["state"]
    return model_ok and all(torch.equal(optim[i][k], v)
                            for i, s in expected["optimizer"].items() for k, v in s.items())


def test_each_checkpoint_holds_its_step_though_the_loop_ran_on(tmp_path: Path) -> None:
    """Every save is followed at once by a forward pass (BatchNorm statistics change) and an
    optimizer step: without the fence that step rewrites weights and moments mid-copy."""
    model, optimizer, batch = _setup()
    ckpt = Checkpointer(tmp_path, keep=10, every_steps=2, async_save=True, background_copy=True,
                        flag=quiet_flag())
    ckpt.restore(model=model, optimizer=optimizer)
    expected = {}
    for step in range(1, 9):
        _train(model, optimizer, batch)
        ckpt.step(step)
        if step % 2 == 0:
            expected[step] = _now(model, optimizer)
    ckpt.close()
    for step, state in expected.items():
        assert _holds(tmp_path / f"step-{step:08d}.safetensors", state), step
    assert ckpt.published == 8


def test_a_change_outside_optimizer_step_discards_that_checkpoint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, optimizer, batch = _setup()
    ckpt = Checkpointer(tmp_path, keep=10, every_steps=2, async_save=True, background_copy=True,
                        flag=quiet_flag())
    ckpt.restore(model=model, optimizer=optimizer)
    for step in (1, 2):
        _train(model, optimizer, batch)
        ckpt.step(step)
    with torch.no_grad():  # weight clipping, an EMA: not the optimizer's step
        model[0].weight.clamp_(-0.01, 0.01)
    _train(model, optimizer, batch)
    ckpt.step(3)
    ckpt.close()
    assert not (tmp_path / "step-00000002.safetensors").exists()
    err = caplog.text
    assert "the checkpoint of step 2 was discarded, not published: 'model/0.weight' (and 0 " in err
    # From now on the copy is taken on the training thread: whole, whatever the loop does.
    _train(model, optimizer, batch)
    ckpt.step(4)
    expected = _now(model, optimizer)
    with torch.no_grad():
        model[0].weight.clamp_(-0.01, 0.01)
    ckpt.close()
    assert _holds(tmp_path / "step-00000004.safetensors", expected)


def test_a_stop_at_the_discarded_step_saves_it_again(tmp_path: Path) -> None:
    model, optimizer, batch = _setup(64)
    ckpt = Checkpointer(tmp_path, every_steps=1, async_save=True, background_copy=True,
                        flag=quiet_flag())
    ckpt.restore(model=model, optimizer=optimizer)
    _train(model, optimizer, batch)
    ckpt.step(1)
    with torch.no_grad():
        model[0].bias.zero_()
    expected = _now(model, optimizer)
    assert ckpt.step(1, last=True)  # the same step again, as the loop's end
    assert ckpt.last_saved == 1 and _holds(tmp_path / "step-00000001.safetensors", expected)


def test_an_interpreter_that_exits_without_close_still_publishes(tmp_path: Path) -> None:
    """The writer waits for the training thread's verdict; when the main thread is gone it
    judges by itself rather than hang the interpreter's exit."""
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from runai_entry.training.checkpointer import Checkpointer
        from runai_entry.training.stop import StopFlag
        model = torch.nn.Linear(256, 256)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        ckpt = Checkpointer({str(tmp_path)!r}, every_steps=1, async_save=True,
                            background_copy=True, flag=StopFlag(signals=[], timeout=None))
        ckpt.restore(model=model, optimizer=optimizer)
        ckpt.step(1)
        torch.save(model.state_dict(), {str(tmp_path / "expected.pt")!r})
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    saved = tensorfile.load(str(tmp_path / "step-00000001.safetensors"))["model"]
    expected = torch.load(tmp_path / "expected.pt")
    assert all(torch.equal(saved[k], v) for k, v in expected.items())


@pytest.mark.parametrize(("options", "message"), [
    ({"background_copy": True}, "needs async_save=True"),
    ({"background_copy": True, "async_save": True, "backend": "dcp"}, "the file backend"),
])
def test_background_copy_refuses_what_it_cannot_do(tmp_path: Path, options: dict[str, Any],
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Checkpointer(tmp_path, flag=quiet_flag(), **options)


@pytest.mark.parametrize("optimizer", [None, object()])
def test_background_copy_needs_the_optimizer(tmp_path: Path, optimizer: Any) -> None:
    ckpt = Checkpointer(tmp_path, async_save=True, background_copy=True, flag=quiet_flag())
    with pytest.raises(ConfigError, match=r"needs the torch\.optim optimizer in restore"):
        ckpt.restore(model=torch.nn.Linear(2, 2), optimizer=optimizer)


def test_every_optimizer_given_is_fenced(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         ) -> None:
    """A second optimizer given by name (over other parameters) holds its step() for the copy
    too: it steps first here, mid-copy, and no checkpoint is discarded; each holds its step."""
    model, _, batch = _setup(64)
    first = torch.optim.Adam(model[:4].parameters(), lr=1e-2)
    second = torch.optim.SGD(model[4:].parameters(), lr=1e-2, momentum=0.9)
    ckpt = Checkpointer(tmp_path, keep=10, every_steps=1, async_save=True, background_copy=True,
                        flag=quiet_flag())
    ckpt.restore(model=model, optimizer=first, second=second)
    expected = {}
    for step in range(1, 6):
        first.zero_grad()
        second.zero_grad()
        model(batch).square().mean().backward()
        second.step()  # before the primary's step: without its own hook it tears the copy
        first.step()
        ckpt.step(step)
        expected[step] = ({k: v.clone() for k, v in model.state_dict().items()},
                          {i: {k: v.clone() for k, v in s.items()}
                           for i, s in second.state_dict()["state"].items()})
    ckpt.close()
    assert "discarded" not in caplog.text
    for step, (weights, moments) in expected.items():
        saved = tensorfile.load(str(tmp_path / f"step-{step:08d}.safetensors"))
        assert all(torch.equal(saved["model"][k], v) for k, v in weights.items()), step
        assert all(torch.equal(saved["second"]["state"][i][k], v)
                   for i, s in moments.items() for k, v in s.items()), step
    assert ckpt.published == 5
