"""The manifests under deploy/ against the real API schemas, and against runai-entry's rules.

The Job is checked with kubernetes-validate (the Kubernetes OpenAPI schemas it bundles, strict:
unknown fields are errors). The PyTorchJob is a CRD: its spec is checked with the operator's own
CRD schema (vendored, see tests/data/crds/SOURCE.md), and each pod template it holds with
kubernetes-validate as a core PodTemplate.
"""

from __future__ import annotations

import copy
import gzip
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from runai_entry.config.durations import parse_duration
from runai_entry.core.errors import (
    EXIT_CHECKPOINT_DIR_UNAVAILABLE,
    EXIT_CRASH_LOOP,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37 bundles
CRD = Path(__file__).parent / "data" / "crds" / "kubeflow.org_pytorchjobs-v1.9.0.yaml.gz"
#: The preempt exit code docs/deployment.md recommends for a podFailurePolicy.
PREEMPT_EXIT_CODE = 85
#: The code the crash-loop guard exits with: FailJob.
CRASH_LOOP_EXIT_CODE = EXIT_CRASH_LOOP


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


class TestJob:
    def test_valid_against_the_kubernetes_schema(self) -> None:
        kubernetes_validate.validate(_load("job.yaml"), K8S_VERSION, strict=True)

    def test_the_validator_rejects_a_misspelt_field(self) -> None:
        """The check can fail: a typo that kubectl would drop silently is an error here."""
        doc = _load("job.yaml")
        doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        doc = _load("job.yaml")
        doc["spec"]["podFailurePolicy"]["rules"][0]["action"] = 7
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    def test_pod_failure_policy_follows_runai_entry(self) -> None:
        """Ignore disruptions and the preempt code, FailJob on the crash-loop guard's code,
        restartPolicy Never, and a grace period equal to runai-entry's."""
        spec = _load("job.yaml")["spec"]
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        env = _env(container)
        assert pod["restartPolicy"] == "Never"
        assert pod["terminationGracePeriodSeconds"] == parse_duration(
            env["RUNAI_ENTRY_GRACE_PERIOD"])
        assert int(env["RUNAI_ENTRY_PREEMPT_EXIT_CODE"]) == PREEMPT_EXIT_CODE
        rules = spec["podFailurePolicy"]["rules"]
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
        by_code = {(r["action"], code): r["onExitCodes"]
                   for r in rules if "onExitCodes" in r for code in r["onExitCodes"]["values"]}
        assert by_code[("Ignore", PREEMPT_EXIT_CODE)]["operator"] == "In"
        assert by_code[("FailJob", CRASH_LOOP_EXIT_CODE)]["operator"] == "In"
        assert all(r["containerName"] == container["name"] for r in by_code.values())

    def test_the_recommended_codes_mean_nothing_else(self) -> None:
        """Not Python's crash (1) or usage (2) codes, not one runai-entry gives for something
        else, not a signal's 128+N."""
        taken = {0, 1, 2, EXIT_USAGE, EXIT_CHECKPOINT_DIR_UNAVAILABLE, EXIT_NOT_EXECUTABLE,
                 EXIT_NOT_FOUND}
        for code in (PREEMPT_EXIT_CODE, CRASH_LOOP_EXIT_CODE):
            assert code not in taken and code < 126
        assert PREEMPT_EXIT_CODE != CRASH_LOOP_EXIT_CODE


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = yaml.safe_load(gzip.decompress(CRD.read_bytes()))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


class TestPyTorchJob:
    def test_valid_against_the_operator_crd(self, schema: dict[str, Any]) -> None:
        jsonschema.validate(_load("pytorchjob.yaml"), schema)

    def test_the_crd_check_can_fail(self, schema: dict[str, Any]) -> None:
        doc = _load("pytorchjob.yaml")
        doc["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "two"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)

    def test_pod_templates_valid_against_the_kubernetes_schema(self) -> None:
        """The CRD leaves unknown fields to pruning; the core schema, strict, does not."""
        for replica in _load("pytorchjob.yaml")["spec"]["pytorchReplicaSpecs"].values():
            template = {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": "t"}, "template": copy.deepcopy(replica["template"])}
            kubernetes_validate.validate(template, K8S_VERSION, strict=True)

    def test_grace_period_matches_and_container_is_named_pytorch(self) -> None:
        for replica in _load("pytorchjob.yaml")["spec"]["pytorchReplicaSpecs"].values():
            pod = replica["template"]["spec"]
            (container,) = pod["containers"]
            assert container["name"] == "pytorch"
            command = container["command"]
            assert command[0] == "runai-entry" and command[-1] == "--"
            grace = command[command.index("--grace-period") + 1]
            assert pod["terminationGracePeriodSeconds"] == parse_duration(grace)
            assert container["args"][0] == "torchrun"
            assert replica["restartPolicy"] in ("OnFailure", "Always")


class TestRunaiSubmit:
    def _commands(self) -> list[list[str]]:
        text = (DEPLOY / "runai-submit.sh").read_text().replace("\\\n", " ")
        lines = [line for line in text.splitlines() if line.startswith("runai submit")]
        return [shlex.split(line) for line in lines]

    def test_every_submit_sets_backoff_and_a_matching_grace_period(self) -> None:
        commands = self._commands()
        assert len(commands) == 2
        for argv in commands:
            assert int(argv[argv.index("--backoff-limit") + 1]) > 6
            platform = parse_duration(argv[argv.index("--termination-grace-period") + 1])
            if "--grace-period" in argv:
                ours = argv[argv.index("--grace-period") + 1]
            else:
                (ours,) = [m.group(1) for a in argv
                           if (m := re.fullmatch(r"RUNAI_ENTRY_GRACE_PERIOD=(.+)", a))]
            assert parse_duration(ours) == platform
            # Run:ai knows no podFailurePolicy: the guide's exit 1, runai-entry's default.
            assert not any("PREEMPT_EXIT_CODE" in a or a == "--preempt-exit-code" for a in argv)
