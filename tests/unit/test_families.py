"""Every registered family through the same small checks (the role of scikit-learn's check_estimator).

Each family is built, fitted, saved, loaded and converted once, on its smoke config and tiny
synthetic data, through the hooks the stages call; the checks then read that one result. The
model's own predictions (Keras' `predict`, the NumPy MLP's `predict_proba`) are what its ONNX
file must reproduce. A new family passes by being registered and having a smoke config in
tests/unit/test_models.py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from dlzoo import models, onnx_model
from dlzoo.config.experiments import FAMILY_CONFIGS
from dlzoo.export import parity
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets, Family, FitOptions
from dlzoo.models.scratch_mlp.numpy_mlp import NumpyMLP
from dlzoo.train import loop
from tests.unit.test_models import LOSSES, SMOKE, plain_training, tiny_data

SOURCE = Path(__file__).resolve().parents[2] / "src" / "dlzoo"
# The code that runs every family: it may hold no family's name.
GENERIC = [
    "data",
    "train",
    "evaluate",
    "export",
    "report",
    "serve",
    "track",
    "onnx_model.py",
    "problems.py",
    "config/base.py",
]


@dataclass
class Run:
    family: Family
    spec: InputSpec
    x: np.ndarray
    model: Any
    history: list[dict]
    predictions: np.ndarray
    directory: Path


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    """The trained model's own outputs: the NumPy MLP's probabilities, or Keras' predict."""
    if isinstance(model, NumpyMLP):
        return model.predict_proba(x.astype(np.float64))
    return model.predict(x, verbose=0)


def build_and_fit(family: Family, seed: int = 3) -> tuple[Any, list[dict], np.ndarray, InputSpec]:
    config, spec = SMOKE[family.name]
    classes = 0 if family.reconstructs else max(getattr(config, "output_units", 2), 2)
    x, y = tiny_data(spec, classes, np.random.default_rng(seed), count=32)
    loop.set_seeds(seed, deterministic=True)
    rng = np.random.default_rng(seed)
    model = family.build(config, spec, Assets(classes, rng))
    loss = (
        "binary_crossentropy"
        if family.reconstructs
        else LOSSES[getattr(config, "output_activation", "softmax")]
    )
    fitted = family.fit(
        model,
        plain_training(loss, no_metrics=family.reconstructs),
        {"train": (x, y), "val": (x[:8], y[:8])},
        spec,
        FitOptions(seed=seed, rng=rng, track=False, verbose=0),
    )
    return fitted.model, fitted.history, x, spec


@pytest.fixture(scope="module", params=models.names())
def run(request, tmp_path_factory) -> Run:
    family = models.family(request.param)
    model, history, x, spec = build_and_fit(family)
    directory = tmp_path_factory.mktemp(family.name)
    family.save(model, directory)
    return Run(family, spec, x, model, history, predict(model, x), directory)


def test_it_is_registered_under_its_own_name_with_its_config_class(run: Run):
    assert run.family.name in models.names()
    assert models.FAMILIES[run.family.name] is run.family  # loaded on first use, then kept
    assert FAMILY_CONFIGS[run.family.name] is run.family.config
    assert isinstance(SMOKE[run.family.name][0], run.family.config)
    assert all(
        isinstance(getattr(run.family, flag), bool)
        for flag in ("reconstructs", "distributable", "pretrained")
    )


def test_fit_gives_one_epoch_with_finite_losses(run: Run):
    assert [row["epoch"] for row in run.history] == [1]
    assert np.isfinite(run.history[0]["loss"]) and np.isfinite(run.history[0]["val_loss"])
    assert run.family.parameter_count(run.model) > 0


def test_predictions_have_one_row_per_sample_and_are_finite(run: Run):
    assert run.predictions.shape[0] == len(run.x)
    assert np.isfinite(run.predictions).all()


def test_the_same_seed_gives_the_same_predictions(run: Run):
    model, _, x, _ = build_and_fit(run.family)
    np.testing.assert_array_equal(predict(model, x), run.predictions)


def test_a_saved_model_loads_and_predicts_the_same(run: Run):
    loaded = run.family.load(run.directory)
    np.testing.assert_allclose(predict(loaded, run.x), run.predictions, rtol=1e-6, atol=1e-6)


def test_onnx_runtime_agrees_with_predict_at_any_batch_size(run: Run):
    x = run.x.astype(np.int32 if run.spec.dtype == "int32" else np.float32)
    converted = run.family.to_onnx(run.model, run.spec, 17, x)
    onnx.checker.check_model(converted.proto)
    (graph_input,) = converted.proto.graph.input
    assert graph_input.name == onnx_model.INPUT_NAME
    (graph_output,) = converted.proto.graph.output
    assert graph_output.name == onnx_model.OUTPUT_NAME
    assert not graph_input.type.tensor_type.shape.dim[0].HasField("dim_value")  # any batch size
    np.testing.assert_allclose(converted.expected, run.predictions, rtol=1e-5, atol=1e-5)
    session = onnx_model.session(converted.proto.SerializeToString())
    for batch in (1, 7, len(x)):
        checked = parity.check_parity(
            session, converted.expected[:batch], x[:batch], 1e-4, classify=not run.family.reconstructs
        )
        assert checked.max_abs_diff <= 1e-4 and checked.classes_agree
    served = onnx_model.predict(session, x)  # what the evaluate stage scores
    assert served.shape[0] == len(x) and served.dtype == np.float32


def test_no_generic_module_holds_a_family_name():
    names = set(models.names())
    found = []
    for entry in GENERIC:
        for path in sorted((SOURCE / entry).rglob("*.py")) if (SOURCE / entry).is_dir() else [SOURCE / entry]:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(SOURCE)}:{node.lineno} {node.value!r}")
    assert not found
