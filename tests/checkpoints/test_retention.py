"""Retention through the Checkpointer and for DCP directories: files that fail verification never
count towards keep and are said once, and the checkpoint a run resumed from is never deleted.
Real saves in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from runai_entry.training.checkpointer import Checkpointer  # noqa: E402
from runai_entry.training.dcp import prune_sharded  # noqa: E402
from runai_entry.training.stop import StopFlag  # noqa: E402

#: What a save cut by a kill leaves under a final name: a header, and nothing after it.
TORN = (64).to_bytes(8, "little") + b'{"w": {"dtype"'


def _objects() -> dict[str, object]:
    model = torch.nn.Linear(2, 2)
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}


def _checkpointer(directory: Path, keep: int) -> Checkpointer:
    return Checkpointer(directory, keep=keep, every_steps=1,
                        flag=StopFlag(signals=[], timeout=None))  # installs no handler here


def _files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


class TestCheckpointerRetention:
    def test_torn_newer_files_are_left_and_said_once(
            self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """Three torn files numbered above every save: each save keeps the newest two that
        verify (the one just written among them), and one line says what was left."""
        torn = [f"step-{s:08d}.safetensors" for s in (90, 91, 92)]
        for name in torn:
            (tmp_path / name).write_bytes(TORN)
        ckpt = _checkpointer(tmp_path, keep=2)
        assert ckpt.restore(**_objects()) == 0  # the torn ones are not resumed from either
        for step in range(1, 5):
            ckpt.step(step)
        assert _files(tmp_path) == ["step-00000003.safetensors", "step-00000004.safetensors",
                                    *torn]
        lines = [line for line in caplog.messages if "retention" in line]
        assert len(lines) == 1, lines
        assert "3 entries fail verification and are left in place" in lines[0]
        assert f"{torn[-1]!r}" in lines[0]

    def test_the_checkpoint_resumed_from_is_never_deleted(self, tmp_path: Path) -> None:
        first = _checkpointer(tmp_path, keep=5)
        first.restore(**_objects())
        for step in (1, 2, 3):
            first.step(step)
        again = _checkpointer(tmp_path, keep=2)
        assert again.restore(**_objects()) == 3
        for step in range(4, 8):
            again.step(step)
        assert _files(tmp_path) == [f"step-{s:08d}.safetensors" for s in (3, 6, 7)]


class TestShardedRetention:
    def test_dcp_directories_count_only_when_complete_and_the_resumed_one_stays(
            self, tmp_path: Path) -> None:
        for step in (1, 2, 3, 4):
            (tmp_path / f"step-{step:08d}").mkdir()
            (tmp_path / f"step-{step:08d}" / ".metadata").write_bytes(b"m")
        (tmp_path / "step-00000009.safetensors").write_bytes(TORN)  # a file of the same glob
        result = prune_sharded(tmp_path, keep=2, pattern="step-[0-9]*",
                               protect=tmp_path / "step-00000001")
        assert result.kept == ["step-00000004", "step-00000003"]
        assert result.deleted == ["step-00000002"] and result.protected == ["step-00000001"]
        assert [name for name, _ in result.failed] == ["step-00000009.safetensors"]
        assert _files(tmp_path) == ["step-00000001", "step-00000003", "step-00000004",
                                    "step-00000009.safetensors"]
