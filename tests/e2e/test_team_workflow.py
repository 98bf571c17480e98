"""What a team does with the pipeline: a sweep through DVC's queue, the team's S3 remote, and the
MLflow UI in a browser, on a project of the NumPy MLP alone (no TensorFlow in its stages)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.projects import new_project, repro, run, tiny_params

pytestmark = pytest.mark.e2e

SWEPT = "scratch_moons"  # the NumPy MLP: no TensorFlow to load in its train and export stages
SWEPT_TASK = "moons"
LEARNING_RATES = ("0.05", "0.2")
GIT_IDENTITY = {  # DVC's queue commits each experiment to a git ref
    "GIT_AUTHOR_NAME": "dlzoo tests",
    "GIT_AUTHOR_EMAIL": "tests@dlzoo.invalid",
    "GIT_COMMITTER_NAME": "dlzoo tests",
    "GIT_COMMITTER_EMAIL": "tests@dlzoo.invalid",
}


@pytest.fixture(scope="module")
def committed(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, its pipeline run, committed: what `dvc exp run --queue` and a clone start from."""
    params = tiny_params(project_root, {SWEPT: 50})
    root = new_project(project_root, tmp_path_factory.mktemp("team"), params)
    repro(root)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in GIT_IDENTITY.items():
            patch.setenv(key, value)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-q", "-m", "the pipeline, run"], root)
    return root


@pytest.fixture(scope="module")
def swept(committed: Path, project_root: Path) -> dict[str, str]:
    """What `make sweep` does, with two points and two workers: {DVC experiment name: learning rate}."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in GIT_IDENTITY.items():
            patch.setenv(key, value)
        key = f"experiments.{SWEPT}.training.learning_rate"
        run(["dvc", "exp", "run", "--queue", "-S", f"{key}={','.join(LEARNING_RATES)}"], committed)
        run(["dvc", "queue", "start", "-j", "2"], committed)
        waited = run(
            [sys.executable, str(project_root / "ci" / "wait_for_queue.py"), "--timeout", "900"], committed
        )
    names = dict(line.split(": ") for line in waited.splitlines() if line.endswith(": Success"))
    assert len(names) == len(LEARNING_RATES), waited
    shown = json.loads(run(["dvc", "exp", "show", "--json"], committed))
    found = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            for revision in group["revs"]:
                params = revision["data"]["params"]["params.yaml"]["data"]
                found[revision["name"]] = str(params["experiments"][SWEPT]["training"]["learning_rate"])
    assert set(found) == set(names), (found, names)
    return found


def test_a_sweep_through_dvcs_queue_gives_one_finished_mlflow_run_per_point(committed: Path, swept):
    from mlflow.tracking import MlflowClient

    from dlzoo import track

    assert sorted(swept.values()) == sorted(LEARNING_RATES)
    client = MlflowClient(f"sqlite:///{committed / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(SWEPT_TASK)
    # Created by the first `dvc repro`; its artefacts live under the project, whatever the cwd.
    assert experiment.artifact_location == (committed / "mlruns").as_uri()
    for name, learning_rate in swept.items():
        (trained,) = client.search_runs([experiment.experiment_id], f"tags.`dvc.experiment` = '{name}'")
        assert trained.info.status == "FINISHED" and trained.info.run_name == f"{SWEPT}@{name}"
        assert trained.data.tags[track.EXPERIMENT_TAG] == SWEPT
        assert trained.data.params["training.learning_rate"] == learning_rate
        assert "test_accuracy" in trained.data.metrics  # the track stage of that queue workspace
        assert Path(trained.info.artifact_uri.removeprefix("file://")).is_relative_to(committed / "mlruns")
        artifacts = {item.path for item in client.list_artifacts(trained.info.run_id)}
        assert {"model", "history", "environment", "evaluation"} <= artifacts
        model = client.list_artifacts(trained.info.run_id, "model")
        assert [item.path for item in model] == ["model/model.npz"] and model[0].file_size > 0
        versions = client.search_model_versions(
            f"name = 'dlzoo-{SWEPT}' and run_id = '{trained.info.run_id}'"
        )
        assert len(versions) == 1
    # The queue workspaces are gone; nothing of MLflow's was left inside them.
    assert not list((committed / ".dvc" / "tmp" / "exps").glob("*/mlruns"))


def test_dvc_pull_in_a_fresh_clone_restores_every_output_from_the_s3_remote(committed: Path, tmp_path: Path):
    """The team's DVC remote on a real S3 server (moto): push from one clone, pull in another."""
    from tests import services

    with services.s3_server(tmp_path) as s3, pytest.MonkeyPatch.context() as patch:
        for key, value in {**services.S3_CREDENTIALS, **GIT_IDENTITY}.items():
            patch.setenv(key, value)
        s3.create_bucket("dvc")
        run(["dvc", "remote", "add", "-d", "team", "s3://dvc/store"], committed)
        run(["dvc", "remote", "modify", "team", "endpointurl", s3.endpoint], committed)
        run(["git", "commit", "-q", "-m", "DVC remote: the team's S3", ".dvc/config"], committed)
        pushed = run(["dvc", "push"], committed)
        assert "files pushed" in pushed and s3.keys("dvc")
        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(committed), str(clone)], tmp_path)
        assert not (clone / "models").exists() or not any((clone / "models").iterdir())
        run(["dvc", "pull"], clone)
        lock = yaml.safe_load((committed / "dvc.lock").read_text())["stages"]
        for stage in lock.values():
            for out in stage.get("outs", []):
                assert (clone / out["path"]).exists(), out["path"]
        assert run(["dvc", "status"], clone).strip().endswith("Data and pipelines are up to date.")
        again = run(["dvc", "repro"], clone)
        assert "Running stage" not in again and "Data and pipelines are up to date." in again
    assert (clone / "models" / "repository" / SWEPT / "1" / "model.onnx").read_bytes() == (
        committed / "models" / "repository" / SWEPT / "1" / "model.onnx"
    ).read_bytes()


def test_the_mlflow_ui_opens_on_the_training_runs_and_compares_the_sweep(
    committed: Path, swept, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Headless Chromium (Debian's) driven by Playwright, a fresh profile, on `mlflow ui` over the store."""
    from playwright.sync_api import sync_playwright

    from dlzoo import track
    from tests import services
    from tests.network import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store = f"sqlite:///{committed / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    urls = track.ui_urls(base)  # what `make ui` prints
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tmp_path / "mlflow-ui.log"
    browser_path = services.chromium()
    with services.background(command, log, env) as process, sync_playwright() as playwright:
        services.wait_until(lambda: requests.get(f"{base}/health", timeout=2).ok, process, log, "mlflow ui")
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1600, "height": 1100}).new_page()
        page.goto(urls[SWEPT_TASK])
        page.get_by_text("Run Name").wait_for(timeout=60_000)
        page.get_by_text(f"{SWEPT}@{next(iter(swept))}").wait_for(timeout=30_000)
        runs_table = page.inner_text("body")
        assert "/runs" in page.url and "workflowType=machine_learning" in page.url
        assert "Token Usage" not in runs_table and "Traces" in runs_table  # not the GenAI overview
        for name in swept:
            assert f"{SWEPT}@{name}" in runs_table
        assert "Dataset" in runs_table and f"{SWEPT_TASK} (" in runs_table and "Training" in runs_table
        page.screenshot(path=str(tmp_path / "runs.png"))

        page.get_by_role("checkbox").first.check()  # the header's box: every run of the experiment
        page.get_by_role("button", name="Compare").click()
        page.get_by_text("Parameters").first.wait_for(timeout=60_000)
        page.get_by_text("test_accuracy").first.wait_for(timeout=30_000)
        compared = page.inner_text("body")
        assert "compare-runs" in page.url
        (row,) = [line for line in compared.splitlines() if line.startswith("training.learning_rate\t")]
        assert all(rate in row.split("\t") for rate in LEARNING_RATES), row
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        browser.close()
    keep = os.environ.get("DLZOO_SCREENSHOT_DIR")  # README's picture: DLZOO_SCREENSHOT_DIR=docs/images
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "compare.png", Path(keep) / "mlflow-compare.png")
        shutil.copy(tmp_path / "runs.png", Path(keep) / "mlflow-runs.png")


# As root (CI), in a closed network: no sandbox, and none of Chromium's calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
