"""A tiny but complete pipeline: data, train, evaluate, export and report, through real DVC."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from dlzoo import repository
from dlzoo.records import VARIANTS_FILE, Metrics, Variants
from tests.e2e.projects import new_project, repro, run, tiny_params

pytestmark = pytest.mark.e2e
# One experiment per kind of input and problem, each for a few epochs (the CNN family, the
# simplest graph, trains and exports in tests/integration/test_speed_options.py).
KEPT = {
    "scratch_moons": 50,
    "blobs_mlp": 5,
    "sine_rnn": 3,
    "imdb_transformer": 1,
    "cats_dogs_transfer": 1,
    "mnist_autoencoder": 1,
}
FAST = ("scratch_moons", "blobs_mlp")  # forced again to check byte reproducibility: NumPy, Keras
DATA_STAGES = ["download", "no_weights", "generate", "preprocess"]


@pytest.fixture(scope="module")
def tiny_project(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = new_project(project_root, tmp_path_factory.mktemp("tiny"), tiny_params(project_root, KEPT))
    repro(root)
    return root


def test_every_data_set_is_built_offline_and_a_second_repro_does_nothing(tiny_project: Path):
    for name in ("moons", "blobs", "sine", "mnist", "cifar10", "cats_dogs", "imdb"):
        assert (tiny_project / "data" / "processed" / name / "info.json").is_file(), name
    for name in ("mnist", "cifar10", "imdb", "mobilenet_v2", "none"):
        assert (tiny_project / "data" / "raw" / name / "source.json").is_file(), name
    assert (tiny_project / "mlflow.db").is_file()  # the default store: an absolute SQLite URI at the root
    lock = (tiny_project / "dvc.lock").read_text()
    again = run(["dvc", "repro", *DATA_STAGES], tiny_project)
    assert "Running stage" not in again and "Data and pipelines are up to date." in again
    assert (tiny_project / "dvc.lock").read_text() == lock
    status = run(["dvc", "status", *DATA_STAGES], tiny_project)
    assert status.strip().endswith("Data and pipelines are up to date.")


def test_report_lists_every_experiment_with_metric_and_size(tiny_project: Path):
    report = (tiny_project / "reports" / "summary.md").read_text()
    for name in KEPT:
        # The demo has no ImageNet weights: the transfer row says which variant it measured.
        label = f"{name} (random weights)" if name == "cats_dogs_transfer" else name
        (row,) = [line for line in report.splitlines() if line.startswith(f"| {label} |")]
        assert " KiB |" in row and "training_curves" in row
        assert Metrics.read(tiny_project / "metrics" / f"{name}.json").training_variant == (
            "random weights" if name == "cats_dogs_transfer" else None
        )
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


def test_onnx_models_are_registered_in_the_training_run_found_by_its_tags(tiny_project: Path):
    from mlflow.tracking import MlflowClient

    from dlzoo import track

    client = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    for name in KEPT:
        (version,) = client.search_model_versions(f"name='dlzoo-{name}'")
        metadata = repository.read_metadata(tiny_project / "models" / "repository" / name)
        run = client.get_run(version.run_id)
        assert run.data.tags[track.EXPERIMENT_TAG] == name
        assert run.data.tags[track.MODEL_SHA256_TAG] == metadata.source_sha256
        assert "test_samples" in run.data.metrics and "onnx_parity_max_abs_diff" in run.data.metrics
        assert "train_seconds" in run.data.metrics and run.info.status == "FINISHED"
        # The demo has no ImageNet weights: the transfer recipe trains its named random-weights variant.
        variant = "random weights" if name == "cats_dogs_transfer" else None
        assert run.info.run_name == (f"{name} ({variant})" if variant else name)
        assert run.data.tags.get(track.VARIANT_TAG) == variant


def test_the_exported_repository_serves_real_test_samples(tiny_project: Path):
    """The pipeline's own repository (real export metadata) behind the app, on real test samples."""
    import numpy as np
    import onnxruntime
    from fastapi.testclient import TestClient

    from dlzoo.data.splits import load_split
    from dlzoo.serve.app import ServeSettings, create_app

    data = {"scratch_moons": "moons", "blobs_mlp": "blobs", "sine_rnn": "sine"}
    with TestClient(create_app(ServeSettings(tiny_project / "models" / "repository"))) as client:
        for name in FAST:  # float features; the image and text models have their own serving tests
            x, _ = load_split(tiny_project / "data" / "processed" / data[name], "test")
            x = x[:5].astype(np.float32)
            body = {
                "inputs": [{"name": "inputs", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]
            }
            entry = tiny_project / "models" / "repository" / name
            versions = repository.versions(entry)
            # Each version by its path, and an unversioned request, which the highest answers.
            for version, path in [(v, f"/v2/models/{name}/versions/{v}/infer") for v in versions] + [
                (versions[-1], f"/v2/models/{name}/infer")
            ]:
                response = client.post(path, json=body)
                assert response.status_code == 200, response.text
                assert response.json()["model_version"] == version
                output = response.json()["outputs"][0]
                values = np.reshape(output["data"], output["shape"])
                session = onnxruntime.InferenceSession(entry / version / "model.onnx")
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


def test_dvc_status_lists_what_each_kind_of_change_reruns(tiny_project: Path):
    """The table in the README, on this project: ci/rerun_table.py edits and reads `dvc status`."""
    from ci.rerun_table import table

    rows = dict(table(tiny_project, "blobs_mlp", "src/dlzoo/models/transformer/__init__.py", "moons"))
    every = {step: sorted(f"{step}@{name}" for name in KEPT) for step in ("train", "export", "repository")}
    # report and track read the experiment names: DVC marks them for any change under `experiments`
    assert rows["`experiments.blobs_mlp.model` (units)"] == ["report", "track", "train@blobs_mlp"]
    assert rows["`experiments.blobs_mlp.training.epochs`"] == ["report", "track", "train@blobs_mlp"]
    assert rows["Keras verbosity (`DLZOO_VERBOSE` / `dlzoo train --verbose`: not a param)"] == []
    assert rows["`train.seed`"] == every["train"]
    assert rows["`export.opset`"] == every["export"]
    assert rows["`serving.max_batch_size`"] == rows["`serving.max_queue_delay_ms`"] == every["repository"]
    data_stages = [f"download@{name}" for name in ("cifar10", "imdb", "mnist", "mobilenet_v2")]
    data_stages += [f"generate@{name}" for name in ("blobs", "moons", "sine")]
    data_stages += [f"preprocess@{name}" for name in ("cats_dogs", "cifar10", "imdb", "mnist")]
    assert rows["`data.profile`"] == sorted(data_stages)
    assert rows["`data.moons` (one data set)"] == ["generate@moons"]
    assert rows["`src/dlzoo/models/transformer/__init__.py` (one family's code)"] == [
        "export@imdb_transformer",
        "train@imdb_transformer",
    ]
    weights = rows["the MobileNetV2 weights (data/raw/mobilenet_v2)"]
    assert weights == ["download@mobilenet_v2", "train@cats_dogs_transfer"]


def test_a_forced_rerun_leaves_every_out_hash_in_dvc_lock_unchanged(tiny_project: Path):
    """`dvc repro --force` of train, export, optimise, evaluate, repository and report: the same bytes.

    Models (.npz and .keras), ONNX files, variants, metrics, plots, repository entries and the
    report. Two fast experiments (the NumPy MLP and a Keras one), to keep the suite short, and
    the variants of the static-QDQ and Transformer families; `bench/pipeline.py --force-twice`
    checks the whole demo pipeline.
    """
    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())["stages"]
    steps = ("train", "export", "optimise", "evaluate", "repository")
    stages = [f"{step}@{name}" for step in steps for name in FAST]
    stages += ["optimise@cats_dogs_transfer", "optimise@imdb_transformer"]
    run(["dvc", "repro", "--force", "--single-item", *stages, "report"], tiny_project)
    relocked = yaml.safe_load((tiny_project / "dvc.lock").read_text())["stages"]
    for stage in [*stages, "report"]:
        assert relocked[stage]["outs"] == lock[stage]["outs"], stage


def test_kept_variants_are_scored_and_served_beside_the_fp32_model(tiny_project: Path):
    for name in KEPT:
        record = Variants.read(tiny_project / "models" / "variants" / name / VARIANTS_FILE)
        kept = [decision for decision in record.variants if decision.kept]
        entry = tiny_project / "models" / "repository" / name
        assert repository.versions(entry) == ["1", *(decision.version for decision in kept)], name
        metrics = Metrics.read(tiny_project / "metrics" / f"{name}.json")
        assert set(metrics.variants) == {"optimised", "int8"}
        for decision in record.variants:
            scores = metrics.variants[decision.kind]
            assert (scores.kept, scores.version) == (decision.kept, decision.version)
            assert (scores.test is not None) == decision.kept
            if decision.kept:
                assert scores.test_change == pytest.approx(scores.test - metrics.headline.value)


# ---- what each stage reads, against what dvc.yaml declares -----------------------------------

# The NumPy MLP's train and export stages do not import the Keras engine, yet declare it: DVC
# gives every item of a foreach the same deps (its cost: the NumPy MLP reruns, in seconds, when
# the Keras engine changes). Nothing else may be declared and not imported.
KERAS_ENGINE = {
    "src/dlzoo/train/__init__.py",
    "src/dlzoo/models/keras_family.py",
    "src/dlzoo/models/common.py",
    "src/dlzoo/runtime.py",
    "src/dlzoo/train/loop.py",
    "src/dlzoo/train/shared.py",
    "src/dlzoo/train/distributed.py",
    "src/dlzoo/export/conversion.py",
    "src/dlzoo/export/canonical.py",
}
# The same the other way round: the NumPy MLP's train stage imports the decision rule
# (problems.py, for its accuracy); Keras' `fit` counts accuracy with Keras' own metrics.
NUMPY_MLP_ONLY = {"src/dlzoo/problems.py"}
# What a data stage reads depends on its data set and the profile, and DVC gives every item of
# a foreach the same params: a download reads the mirror in full, the seed and the stand-in
# sizes in demo; only the shuffled subsets (cats vs dogs, IMDB) read the seed when preprocessed.
ITEM_DEPENDENT = {"download@": ("data.mirror", "data.seed", "data.demo."), "preprocess@": ("data.seed",)}


def declared_stages(root: Path) -> dict[str, dict]:
    """Every stage as DVC resolves dvc.yaml: its command, code deps and params."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            params = [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params]
            code = [dep.def_path for dep in stage.deps if dep.def_path.startswith("src/")]
            stages[stage.name] = {"argv": shlex.split(stage.cmd)[1:], "code": code, "params": params}
    return stages


def source_files(root: Path, paths: list[str]) -> set[str]:
    found = set()
    for path in paths:
        target = root / path
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        found |= {str(file.relative_to(root)) for file in files if "__pycache__" not in file.parts}
    return found


def leaves(tree: object, key: str) -> set[str]:
    """Every leaf key under `key` in params.yaml (a list or a null is one leaf)."""
    node = tree
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, dict):
        return {key}
    return set().union(*(leaves(tree, f"{key}.{child}") for child in node))


def covered(key: str, declared: list[str]) -> bool:
    return any(key == entry or key.startswith(f"{entry}.") for entry in declared)


def test_every_stage_declares_exactly_the_code_it_imports_and_the_params_it_reads(tiny_project: Path):
    """Each command ran under DVC with DLZOO_TRACE_DIR set and recorded what it read."""
    stages = declared_stages(tiny_project)
    traces = [json.loads(path.read_text()) for path in (tiny_project / "traces").glob("*.json")]
    by_argv = {tuple(trace["argv"]): trace for trace in traces}
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    assert len(stages) == len(traces) == len(by_argv), "every stage ran once and left one trace"
    for name, stage in stages.items():
        trace = by_argv[tuple(stage["argv"])]
        imported = set(trace["modules"])
        declared = source_files(tiny_project, stage["code"])
        assert imported - declared == set(), f"{name} imports code it does not declare"
        unused = declared - imported
        if name.startswith(("train@scratch_moons", "export@scratch_moons")):
            unused -= KERAS_ENGINE
        elif name.startswith("train@"):
            unused -= NUMPY_MLP_ONLY
        assert unused == set(), f"{name} declares code it does not import"
        read = set(trace["params"])
        assert {key for key in read if not covered(key, stage["params"])} == set(), (
            f"{name} reads undeclared params"
        )
        for entry in stage["params"]:
            if entry in read:
                continue  # read as a whole (the experiment names)
            unread = leaves(params, entry) - read
            for prefix, allowed in ITEM_DEPENDENT.items():
                if name.startswith(prefix):
                    unread = {key for key in unread if not key.startswith(allowed)}
            assert unread == set(), f"{name} declares {entry} but does not read {sorted(unread)}"
