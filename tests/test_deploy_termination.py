"""Every container in deploy/ shows runai-entry's termination message, or, when it wrote none
(a crash before it could), the log's tail: ``terminationMessagePolicy: FallbackToLogsOnError``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"


def containers(node: Any) -> list[dict[str, Any]]:
    """Every container of every pod template in a manifest, however deep."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers" and isinstance(value, list):
                found += value
            else:
                found += containers(value)
    elif isinstance(node, list):
        for item in node:
            found += containers(item)
    return found


@pytest.mark.parametrize("name", ["job.yaml", "pytorchjob.yaml"])
def test_every_container_falls_back_to_the_logs(name: str) -> None:
    found = containers(yaml.safe_load((DEPLOY / name).read_text()))
    assert found, name
    for container in found:
        assert container.get("terminationMessagePolicy") == "FallbackToLogsOnError", container
