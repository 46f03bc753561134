"""The Checkpointer and its file format: round trips, resume exactness (one rank and two, async
saves on), per-rank RNG, rank agreement, budget lines, bad input, a full disk, and SIGKILLs."""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from runai_entry.checkpoints import newest_checkpoint, verify_file
from runai_entry.core.errors import ConfigError
from runai_entry.training._io import tensorfile
from runai_entry.training._io.budget import SaveBudget
from runai_entry.training._io.staging import Staging
from runai_entry.training.checkpointer import Checkpointer
from runai_entry.training.continuity import ResumableSampler
from runai_entry.training.legacy import save_training_state
from tests.harness.flags import quiet_flag
from tests.training_scripts import crash_async
from tests.training_scripts.procs import PYTHON, child_env, free_port, script, spawn


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return bool(a == b)


STATE: dict[str, Any] = {
    "model": {"w": torch.randn(3, 4), "i": torch.arange(5), "h": torch.randn(2, 2).bfloat16(),
              "t": torch.randn(4, 6).t(), "empty": torch.empty(0), "scalar": torch.tensor(3.0),
              "mask": torch.tensor([True, False]), "half": torch.randn(3).half()},
    "step": 7,
    "rng": (3, tuple(range(5)), None),
    "optimizer": {"state": {0: {"m": torch.ones(2)}, "1": {"m": torch.zeros(1)}},
                  "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0, 1]}]},
}


class TestTensorFile:

    def test_round_trip_keeps_values_dtypes_and_python_types(self, tmp_path: Path) -> None:
        """Strided, empty, 0-d, bf16, bool; int and str keys alike; tuples stay tuples."""
        p = tensorfile.plan(STATE)
        direct, staged = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
        tensorfile.write(direct, p)
        staging = Staging()
        staging.fill(p)
        tensorfile.write(staged, p, staging)
        assert Path(direct).read_bytes() == Path(staged).read_bytes()
        assert os.path.getsize(direct) == p.total_bytes
        assert _equal(tensorfile.load(direct), STATE)
        assert tensorfile.is_tensorfile(direct) and verify_file(direct) is None

    def test_a_truncated_file_fails_verification_and_loading(self, tmp_path: Path) -> None:
        path = tmp_path / "step-00000001.safetensors"
        tensorfile.write(str(path), tensorfile.plan(STATE))
        data = path.read_bytes()
        path.write_bytes(data[:-10])
        assert "truncated" in (verify_file(str(path)) or "")
        with pytest.raises(tensorfile.FormatError, match="truncated"):
            tensorfile.load(str(path))


class TestCheckpointer:
    def _objects(self) -> dict[str, Any]:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        return {"model": model, "optimizer": optimizer,
                "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 2),
                "sampler": ResumableSampler(10, seed=1)}

    def _train(self, objects: dict[str, Any]) -> None:
        loss = objects["model"](torch.randn(2, 4)).sum()
        objects["optimizer"].zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        objects["optimizer"].step()
        objects["scheduler"].step()

    @pytest.mark.parametrize("async_save", [False, True])
    def test_schedule_retention_stop_and_restore(self, tmp_path: Path, async_save: bool) -> None:
        """every_steps=3 and keep=2; a stop saves the current step and ends with exit code 1;
        a new Checkpointer restores model, optimizer, scheduler, sampler and RNG from it."""
        objects = self._objects()
        flag = quiet_flag()
        ckpt = Checkpointer(tmp_path, keep=2, every_steps=3, async_save=async_save, flag=flag)
        assert ckpt.restore(**objects) == 0 and ckpt.resumed_from is None
        iterator = iter(objects["sampler"])
        for step in range(1, 11):
            self._train(objects)
            next(iterator)
            if step == 10:
                flag.request()
            if ckpt.step(step):
                break
        assert step == 10 and ckpt.done and ckpt.exit_code == 1 and ckpt.published == 10
        assert sorted(os.listdir(tmp_path)) == ["step-00000009.safetensors",
                                                "step-00000010.safetensors"]
        expected_rng = torch.get_rng_state()
        expected = {k: v.clone() for k, v in objects["model"].state_dict().items()}

        torch.manual_seed(99)
        fresh = self._objects()
        again = Checkpointer(tmp_path, flag=quiet_flag())
        assert again.restore(**fresh) == 10
        assert _equal(fresh["model"].state_dict(), expected)
        assert _equal(fresh["optimizer"].state_dict()["state"],
                      objects["optimizer"].state_dict()["state"])
        assert fresh["scheduler"].state_dict() == objects["scheduler"].state_dict()
        assert fresh["sampler"].state_dict() == {"epoch": 0, "start": 10}
        assert torch.equal(torch.get_rng_state(), expected_rng)
        assert again.step(10, last=True) and again.exit_code == 0  # step 10 is not saved twice
        assert len(os.listdir(tmp_path)) == 2

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 0.1.0's API, on purpose
    def test_a_file_written_by_0_1_0_still_loads(self, tmp_path: Path) -> None:
        objects = self._objects()
        save_training_state(tmp_path / "step-00000004.pt", model=objects["model"],
                            optimizer=objects["optimizer"], scheduler=objects["scheduler"], step=4)
        fresh = self._objects()
        with torch.no_grad():
            fresh["model"].weight.zero_()
        ckpt = Checkpointer(tmp_path, flag=quiet_flag())
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # reading them is not deprecated
            assert ckpt.restore(model=fresh["model"], optimizer=fresh["optimizer"]) == 4
        assert torch.equal(fresh["model"].weight, objects["model"].weight)

    def test_an_unwritable_directory_is_one_line_at_construction(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError) as caught:
            Checkpointer(tmp_path / "file" / "ckpt", flag=quiet_flag())
        message = str(caught.value)
        assert "\n" not in message and "cannot be written" in message and "file" in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__

    def test_step_before_restore_is_a_one_line_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="restore"):
            Checkpointer(tmp_path, every_steps=100, flag=quiet_flag()).step(1)

    def test_bad_settings_are_one_line_errors(self, tmp_path: Path) -> None:
        for kwargs, word in (({"keep": 0}, "keep"), ({"agree_every": 0}, "agree_every"),
                             ({"backend": "s3"}, "backend"), ({"prefix": "step-*"}, "prefix")):
            with pytest.raises(ConfigError, match=word):
                Checkpointer(tmp_path, flag=quiet_flag(), **kwargs)

    def test_the_first_save_warns_once_when_the_budget_is_tight(self, tmp_path: Path) -> None:
        """With a 1 ms stop budget any save takes more than half of it: one warning (advice),
        once, attributed to the loop's own line."""
        objects = self._objects()
        ckpt = Checkpointer(tmp_path, every_steps=1, flag=quiet_flag(0.001))
        ckpt.restore(**objects)
        with pytest.warns(UserWarning) as caught:
            for step in (1, 2, 3):
                ckpt.step(step)
        lines = [str(w.message) for w in caught if "budget" in str(w.message)]
        assert len(lines) == 1, lines
        assert {w.filename for w in caught} == {__file__}
        assert "--grace-period" in lines[0] and "terminationGracePeriodSeconds" in lines[0]
        assert "--termination-grace-period" in lines[0] and "RUNAI_ENTRY_STOP_TIMEOUT" in lines[0]


    def test_a_save_due_during_a_write_waits_for_it_and_says_so(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """At most one write in flight: the second save starts after the first is published."""
        model = torch.nn.Linear(4096, 4096)  # 64 MiB: its write outlasts the call that follows
        ckpt = Checkpointer(tmp_path, keep=2, every_steps=1, async_save=True,
                            flag=quiet_flag())
        ckpt.restore(model=model)
        for step in range(1, 7, 2):  # a few tries: a descheduled test thread may let one finish
            ckpt.step(step)
            ckpt.step(step + 1)
            assert ckpt.published == step  # waited for; the next one is in flight
            ckpt.close()
        said = [r for r in caplog.records if "for the previous write" in r.getMessage()]
        assert said and "waited" in said[0].getMessage()
        assert {(r.name, r.levelname) for r in said} == {("runai_entry.training", "WARNING")}
        assert sorted(os.listdir(tmp_path)) == ["step-00000005.safetensors",
                                                "step-00000006.safetensors"]


class TestApi:
    """save(), latest_step(), __exit__, the directory against the variable, stray names."""

    def _model(self) -> torch.nn.Linear:
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3)

    def test_the_variable_wins_over_the_argument_and_says_so_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setenv("RUNAI_ENTRY_CHECKPOINT_DIR", str(tmp_path / "mounted"))
        ckpt = Checkpointer(tmp_path / "local", flag=quiet_flag())
        assert ckpt.directory == str(tmp_path / "mounted")
        lines = caplog.messages
        assert len(lines) == 1 and "wins over the directory argument" in lines[0], lines
        assert str(tmp_path / "mounted") in lines[0] and str(tmp_path / "local") in lines[0]
        caplog.clear()
        Checkpointer(tmp_path / "mounted", flag=quiet_flag())  # the same: nothing to say
        Checkpointer(flag=quiet_flag())
        assert caplog.messages == []

    def test_a_stray_file_changes_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A newer ``final.safetensors`` (a file of the same format, not of this Checkpointer's
        names) is neither restored, nor counted by latest_step(), nor pruned; nor is it taken
        when runai-entry's own discovery passes it in RUNAI_ENTRY_RESUME_FROM."""
        model = self._model()
        ckpt = Checkpointer(tmp_path, keep=1, every_steps=2, flag=quiet_flag())
        assert ckpt.latest_step() is None and ckpt.restore(model=model) == 0
        for step in range(1, 5):
            ckpt.step(step)
        stray = tmp_path / "final.safetensors"
        stray.write_bytes((tmp_path / "step-00000004.safetensors").read_bytes())
        os.utime(stray, (os.path.getmtime(stray) + 100,) * 2)
        for step in range(5, 7):
            ckpt.step(step)
        assert sorted(os.listdir(tmp_path)) == ["final.safetensors", "step-00000006.safetensors"]
        assert ckpt.latest_step() == 6
        monkeypatch.setenv("RUNAI_ENTRY_RESUME_FROM", str(stray))
        again = Checkpointer(tmp_path, flag=quiet_flag())
        assert again.restore(model=self._model()) == 6
        assert again.resumed_from == str(tmp_path / "step-00000006.safetensors")

    @pytest.mark.parametrize("async_save", [False, True])
    def test_save_at_an_epoch_end(self, tmp_path: Path, async_save: bool) -> None:
        """save(step) outside the schedule: saved like a scheduled save, once per step."""
        model = self._model()
        ckpt = Checkpointer(tmp_path, every_steps=100, async_save=async_save, flag=quiet_flag())
        ckpt.restore(model=model)
        for step in range(1, 8):
            ckpt.step(step)
        ckpt.save(7)  # the epoch ends at step 7
        ckpt.save(7)  # again: nothing more
        ckpt.close()
        assert os.listdir(tmp_path) == ["step-00000007.safetensors"]
        assert ckpt.published == ckpt.last_saved == ckpt.latest_step() == 7
        assert tensorfile.load(str(tmp_path / "step-00000007.safetensors"))["step"] == 7

    def test_exit_raises_a_failed_background_write(self, tmp_path: Path) -> None:
        """The directory vanishes under an async save: leaving the block raises the failure
        (CheckpointWriteFailed, a CheckpointError); with another exception in flight, that one
        is what the caller sees."""
        from runai_entry.training.errors import CheckpointError, CheckpointWriteFailed

        for other in (None, KeyError("the loop's own")):
            directory = tmp_path / str(other is None)
            with pytest.raises(KeyError if other else CheckpointWriteFailed) as caught, \
                    Checkpointer(directory, async_save=True, flag=quiet_flag()) as ckpt:
                ckpt.restore(model=self._model())
                directory.rename(tmp_path / "gone")
                ckpt.save(1)
                if other is not None:
                    raise other
            if other is None:
                assert isinstance(caught.value, CheckpointError)
                assert "a background checkpoint write failed: " in str(caught.value)
                assert "No such file or directory" in str(caught.value)
            (tmp_path / "gone").rename(directory)


class TestSaveBudget:
    def test_warns_above_half_the_budget_only(self) -> None:
        tight, roomy = SaveBudget(timeout=10.0), SaveBudget(timeout=10.0)
        tight.record(6_000_000_000, 6.0)
        roomy.record(4_000_000_000, 4.0)
        assert roomy.first_warning() is None
        warning = tight.first_warning()
        assert warning is not None and "6.00 GB took 6.0 s" in warning and "60%" in warning
        assert tight.first_warning() is None  # once
        assert SaveBudget(timeout=None).first_warning() is None  # no budget known

    def test_the_stop_line_when_the_estimate_exceeds_the_time_left(self) -> None:
        budget = SaveBudget(timeout=30.0)
        budget.record(2_000_000_000, 2.0)
        assert budget.stop_line(2_000_000_000, time_left=5.0) is None
        line = budget.stop_line(8_000_000_000, time_left=5.0)
        assert line is not None and "saving anyway" in line and "\n" not in line


# -- real processes -------------------------------------------------------------------------------

STEPS = 40


def _run(argv: list[str], stop_after: int | None = None, pid_of: Any = None,
         env: dict[str, str] | None = None) -> tuple[int, str]:
    with spawn(argv, env=env or child_env()) as child:
        if stop_after is not None:
            target = pid_of(child) if pid_of else child.pid
            child.expect(rf"^step {stop_after}$", timeout=120)
            os.kill(target, signal.SIGTERM)
        rc = child.wait(180)
        return rc, child.output()


def _weights(path: Path) -> dict[str, bytes]:
    return {k: v.numpy().tobytes() for k, v in torch.load(path, weights_only=True).items()}


def _single(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [PYTHON, script("train_ckpt.py"), "--ckpt-dir", str(ckpt), "--out", str(out),
            "--steps", str(STEPS), "--async-save", *extra]


@pytest.mark.slow
def test_async_saves_resume_bit_identical(tmp_path: Path) -> None:
    """Two SIGTERMs at random steps, async saves on: the final weights equal a straight run's."""
    rng = random.Random(9)
    stops = sorted(rng.sample(range(4, STEPS - 6), 2))
    print(f"SIGTERM after steps {stops}")
    rc, out = _run(_single(tmp_path / "a", tmp_path / "a.pt"))
    assert rc == 0 and out.rstrip().endswith("finished"), out[-2000:]
    resume_at = 0
    for stop in stops:
        rc, out = _run(_single(tmp_path / "b", tmp_path / "b.pt", "--step-delay", "0.02"), stop)
        stopped = [int(s) for s in re.findall(r"stopped at step (\d+)", out)]
        assert rc == 1 and len(stopped) == 1 and stopped[0] >= stop, out[-2000:]
        if resume_at:
            assert f"resumed from step-{resume_at:08d}.safetensors at step {resume_at}" in out
        resume_at = stopped[0]
    rc, out = _run(_single(tmp_path / "b", tmp_path / "b.pt"))
    assert rc == 0 and f"at step {resume_at}" in out, out[-2000:]
    assert _weights(tmp_path / "a.pt") == _weights(tmp_path / "b.pt")


def _torchrun(*args: str) -> list[str]:
    return [PYTHON, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
            "--max-restarts", "0", script("train_ckpt.py"), *args]


DDP_ENV = {"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}


def _rank1_pid(child: Any) -> int:
    return int(child.expect(r"^rank 1 pid (\d+)$", timeout=60).group(1))


def _rank_rngs(newest: Path) -> list[torch.Tensor]:
    if newest.is_dir():  # DCP: each rank's own file beside the shards
        files = sorted(newest.glob("rank-*.safetensors"))
        return [tensorfile.load(str(f))["ranks"][0]["rng"]["torch"] for f in files]
    return [r["rng"]["torch"] for r in tensorfile.load(str(newest))["ranks"]]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "file-background-copy", "dcp"])
def test_two_ranks_stop_together_and_resume_bit_identical_with_per_rank_rng(
    tmp_path: Path, backend: str
) -> None:
    """Each rank draws its own dropout masks. SIGTERM reaches rank 1 only; both ranks stop at
    the same step (rank agreement); the resume restores each rank's RNG and data position, so
    the final weights equal an uninterrupted 2-rank run's bit for bit. The file backend saves
    asynchronously, also every 0.15 s by each rank's clock, with the ranks agreeing every 3
    steps (ranks that disagreed on a time-based save would hang); the DCP backend writes shards
    per rank; with ``background_copy`` rank 0 copies behind its training thread."""
    env = child_env(**DDP_ENV)
    common = ["--steps", "24", "--every", "5",
              *(["--async-save", "--every-seconds", "0.15", "--agree-every", "3"]
                if backend != "dcp" else ["--backend", "dcp"]),
              *(["--background-copy"] if backend == "file-background-copy" else [])]
    rc, out = _run(_torchrun("--ckpt-dir", str(tmp_path / "a"), "--out", str(tmp_path / "a.pt"),
                             *common), env=env)
    assert rc == 0, out[-3000:]
    rc, out = _run(_torchrun("--ckpt-dir", str(tmp_path / "b"), "--out", str(tmp_path / "b.pt"),
                             "--step-delay", "0.05", *common), stop_after=8, pid_of=_rank1_pid,
                   env=env)
    stopped = re.findall(r"stopped at step (\d+)", out)
    assert rc == 1 and len(stopped) == 1 and int(stopped[0]) >= 8, out[-3000:]
    suffix = "" if backend == "dcp" else ".safetensors"
    newest = tmp_path / "b" / f"step-{int(stopped[0]):08d}{suffix}"
    assert newest_checkpoint(tmp_path / "b", timeout=None) == str(newest)
    assert len(os.listdir(tmp_path / "b")) == 2  # keep=2, for directories too
    rngs = _rank_rngs(newest)
    assert len(rngs) == 2 and not torch.equal(rngs[0], rngs[1])
    rc, out = _run(_torchrun("--ckpt-dir", str(tmp_path / "b"), "--out", str(tmp_path / "b.pt"),
                             *common), env=env)
    assert rc == 0 and f"at step {stopped[0]}" in out, out[-3000:]
    assert _weights(tmp_path / "a.pt") == _weights(tmp_path / "b.pt")


@pytest.mark.slow
def test_a_full_disk_mid_write_raises_on_every_rank_and_keeps_the_previous(
    tmp_path: Path,
) -> None:
    """After step 10 is saved rank 0 may write no file over 64 KiB (RLIMIT_FSIZE: a real
    EFBIG mid-write). The async write of step 15 fails: both ranks raise at their next step, the
    temporary file is gone and step 10 still loads."""
    ckpts = tmp_path / "ckpt"
    rc, out = _run(_torchrun("--ckpt-dir", str(ckpts), "--out", str(tmp_path / "x.pt"),
                             "--steps", "30", "--every", "5", "--async-save", "--width", "4096",
                             "--fail-after", "10"), env=child_env(**DDP_ENV))
    raised = re.findall(r"rank (\d) raised (\w+): (.*)", out)
    assert sorted(r[0] for r in raised) == ["0", "1"], out[-3000:]
    assert {r[1] for r in raised} == {"CheckpointWriteFailed"}
    assert any("File too large" in r[2] for r in raised if r[0] == "0"), raised
    assert rc != 0
    assert sorted(os.listdir(ckpts)) == ["step-00000005.safetensors", "step-00000010.safetensors"]
    assert tensorfile.load(str(ckpts / "step-00000010.safetensors"))["step"] == 10


@pytest.mark.slow
def test_sigkills_during_async_saves_never_leave_a_torn_checkpoint(tmp_path: Path) -> None:
    """The short version of bench/crash_consistency.py (200 kills there)."""
    seed = int(os.environ.get("CRASH_SEED", "909"))
    print(f"crash seed {seed}")
    stats = crash_async.kill_loop(tmp_path, 8, random.Random(seed), spawn)
    print(f"async crash consistency: {stats}")
    assert stats["max_step"] > 0, "no write was ever published: the test proved nothing"
    assert stats["checked"] > 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
