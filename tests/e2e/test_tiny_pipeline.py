"""A tiny but complete pipeline: data, train, evaluate, export and report, through real DVC."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dlzoo import repository
from dlzoo.records import Metrics
from tests.e2e.test_dvc_pipeline import run

pytestmark = pytest.mark.e2e
KEPT = {"scratch_moons": 50, "blobs_mlp": 5, "sine_rnn": 3}


@pytest.fixture(scope="module")
def tiny_project(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(project_root / name, root / name)
    shutil.copytree(project_root / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["experiments"] = {name: params["experiments"][name] for name in KEPT}
    for name, epochs in KEPT.items():
        params["experiments"][name]["training"]["demo_max_epochs"] = epochs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "repro", "report"], root)
    return root


def test_report_lists_every_experiment_with_metric_size_and_latency(tiny_project: Path):
    report = (tiny_project / "reports" / "summary.md").read_text()
    for name in KEPT:
        (row,) = [line for line in report.splitlines() if line.startswith(f"| {name} |")]
        assert " ms |" in row and " KiB |" in row and "training_curves" in row
    assert "| blobs_mlp | blobs | accuracy " in report
    assert "| sine_rnn | sine | mse " in report


def test_dvc_metrics_show_has_every_experiment(tiny_project: Path):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], tiny_project))
    (workspace,) = shown.values()
    files = workspace["data"]
    assert {Path(path).stem for path in files} == set(KEPT)
    assert files["metrics/blobs_mlp.json"]["data"]["test"]["accuracy"] >= 0.9
    metrics = Metrics.read(tiny_project / "metrics" / "blobs_mlp.json")
    assert metrics.problem == "multiclass" and metrics.test.accuracy >= 0.9
    assert metrics.headline.metric == "accuracy" and metrics.headline.value == metrics.test.accuracy


def test_repository_entries_are_complete_and_parity_held(tiny_project: Path):
    for name in KEPT:
        entry = tiny_project / "models" / "repository" / name
        metadata = repository.read_metadata(entry)
        assert (entry / "config.pbtxt").is_file() and (entry / "1" / "model.onnx").is_file()
        assert metadata.name == name and metadata.profile == "demo"
        assert metadata.parity.max_abs_diff <= metadata.parity.tolerance
        assert metadata.inputs[0].shape[0] == -1


def test_plots_are_written_for_each_problem(tiny_project: Path):
    plots = tiny_project / "plots" / "eval"
    assert (plots / "blobs_mlp" / "decision_boundary.png").is_file()
    assert (plots / "blobs_mlp" / "test_confusion.png").is_file()
    assert (plots / "sine_rnn" / "actual_vs_predicted.png").is_file()
    assert (plots / "scratch_moons" / "training_curves.png").is_file()


def test_onnx_models_are_registered_and_evaluation_is_in_the_run(tiny_project: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    for name in KEPT:
        (version,) = client.search_model_versions(f"name='dlzoo-{name}'")
        metadata = repository.read_metadata(tiny_project / "models" / "repository" / name)
        assert version.run_id == metadata.mlflow_run_id
        run = client.get_run(version.run_id)
        assert "eval_test_samples" in run.data.metrics and "onnx_parity_max_abs_diff" in run.data.metrics


def test_the_exported_repository_serves_real_test_samples(tiny_project: Path):
    """The pipeline's own repository (real export metadata) behind the app, on real test samples."""
    import numpy as np
    import onnxruntime
    from fastapi.testclient import TestClient

    from dlzoo.data.splits import load_split
    from dlzoo.serve.app import ServeSettings, create_app

    data = {"scratch_moons": "moons", "blobs_mlp": "blobs", "sine_rnn": "sine"}
    with TestClient(create_app(ServeSettings(tiny_project / "models" / "repository"))) as client:
        for name in KEPT:
            x, _ = load_split(tiny_project / "data" / "processed" / data[name], "test")
            x = x[:5].astype(np.float32)
            body = {
                "inputs": [{"name": "inputs", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]
            }
            response = client.post(f"/v2/models/{name}/infer", json=body)
            assert response.status_code == 200, response.text
            values = np.reshape(response.json()["outputs"][0]["data"], response.json()["outputs"][0]["shape"])
            session = onnxruntime.InferenceSession(
                tiny_project / "models" / "repository" / name / "1" / "model.onnx"
            )
            np.testing.assert_allclose(values, session.run(None, {"inputs": x})[0], rtol=1e-6, atol=1e-7)
            if name != "sine_rnn":  # classifiers: probabilities (one sigmoid unit, or a softmax)
                assert ((values >= 0) & (values <= 1)).all()
                if values.shape[1] > 1:
                    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)


def test_a_serving_setting_relays_the_repository_and_reconverts_no_model(tiny_project: Path):
    """DVC's own `dvc status` says what a change reruns: batching settings never re-export ONNX."""
    params_file = tiny_project / "params.yaml"
    original = params_file.read_text()
    # Stages of data sets the kept experiments do not use never ran: they are listed either way.
    never_ran = set(json.loads(run(["dvc", "status", "--json"], tiny_project)))
    params = yaml.safe_load(original)
    params["serving"]["max_queue_delay_ms"] = 5
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(run(["dvc", "status", "--json"], tiny_project))) - never_ran
    finally:
        params_file.write_text(original)
    assert changed == {f"repository@{name}" for name in KEPT}
    assert not any(stage.startswith(("export@", "train@", "evaluate@")) for stage in never_ran)


def _weights(model_dir: Path) -> list:
    import keras
    import numpy as np

    if (model_dir / "model.npz").is_file():
        with np.load(model_dir / "model.npz") as archive:
            return [archive[name] for name in sorted(archive.files)]
    return keras.models.load_model(model_dir / "model.keras").get_weights()


def test_a_forced_rerun_gives_identical_metrics_and_weights(tiny_project: Path):
    """Reproducibility on CPU: train and evaluate forced again, same params -> the same bytes and weights.

    Runs last in this module: it rewrites every output of the tiny project.
    """
    import numpy as np

    metrics = {path.name: path.read_bytes() for path in sorted((tiny_project / "metrics").glob("*.json"))}
    weights = {name: _weights(tiny_project / "models" / name) for name in KEPT}
    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())
    # Train and evaluate again, only those (the data stages have their own determinism tests).
    stages = [f"train@{name}" for name in KEPT] + [f"evaluate@{name}" for name in KEPT]
    run(["dvc", "repro", "--force", "--single-item", *stages], tiny_project)
    assert len(metrics) == len(KEPT)
    for name, payload in metrics.items():
        assert (tiny_project / "metrics" / name).read_bytes() == payload, name
    for name, before in weights.items():
        after = _weights(tiny_project / "models" / name)
        assert len(after) == len(before) > 0
        for old, new in zip(before, after, strict=True):
            np.testing.assert_array_equal(old, new)
    relocked = yaml.safe_load((tiny_project / "dvc.lock").read_text())
    for name in KEPT:  # DVC saw the same outputs: the same hashes in dvc.lock
        assert relocked["stages"][f"evaluate@{name}"]["outs"] == lock["stages"][f"evaluate@{name}"]["outs"]
