"""ONNX export details and the parity gate (every family's ONNX parity: test_families.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dlzoo import models, onnx_model
from dlzoo.config.experiments import RnnConfig
from dlzoo.export import conversion, parity
from dlzoo.models.scratch_mlp import onnx_graph
from dlzoo.models.scratch_mlp.numpy_mlp import NumpyMLP
from dlzoo.train import loop
from dlzoo.train.shared import FitSettings
from tests.unit.test_models import TEXT, TINY, plain_training, tiny_data

LOSSES = {"softmax": "sparse_categorical_crossentropy", "sigmoid": "binary_crossentropy"}


def trained(family: str, config=None, spec=None):
    config = config or TINY[family][0]
    spec = spec or TINY[family][1]
    model = models.family(family).builder(config, spec)
    reconstruct = models.family(family).reconstructs
    loss = "binary_crossentropy" if reconstruct else LOSSES[config.output_activation]
    x, y = tiny_data(spec, 1 if reconstruct else config.output_units, np.random.default_rng(5), count=32)
    loop.train(
        model,
        plain_training(loss, no_metrics=reconstruct),
        {"train": (x, y), "val": (x, y)},
        spec,
        FitSettings(seed=5, reconstruct=reconstruct, verbose=0),
    )
    return model, spec, x


def session(proto):
    """ONNX Runtime on a converted graph, as the export stage opens it (from the serialised bytes)."""
    return onnx_model.session(proto.SerializeToString())


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_recurrent_models_export_from_a_clone_without_cudnn(cell: str):
    config = RnnConfig(cell, 4, "tanh", 0.0, 0.0, 8, True, (4,), "relu", 1, "sigmoid")
    model, spec, x = trained("rnn", config, TEXT)
    clone = conversion.exportable(model)
    assert all(
        not getattr(layer, "use_cudnn", False) for layer in clone.layers if hasattr(layer, "use_cudnn")
    )
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    proto = conversion.keras_to_onnx(model, spec)
    parity.check_parity(session(proto), model.predict(x, verbose=0), x, 1e-5, classify=True)


def test_a_broken_export_fails_the_parity_gate_with_the_numbers():
    model, spec, x = trained("cnn")
    other, _, _ = trained("cnn")  # same architecture, different weights: a wrong export
    other.set_weights([w + 0.05 for w in model.get_weights()])
    proto = conversion.keras_to_onnx(other, spec)
    with pytest.raises(
        parity.ParityError,
        match=r"max \|difference\| .* \(tolerance 0\.0001\), \d+ predicted classes differ",
    ):
        parity.check_parity(
            session(proto), model.predict(x, verbose=0), x.astype(np.float32), 1e-4, classify=True
        )


def test_a_wrong_input_signature_is_caught(tmp_path):
    model, spec, x = trained("mlp")
    proto = conversion.keras_to_onnx(model, spec)
    with pytest.raises(parity.ParityError, match="output shape"):
        parity.check_parity(session(proto), np.zeros((len(x), 5), np.float32), x, 1e-4, classify=True)


@pytest.mark.parametrize(
    ("sizes", "activation"), [([2, 5, 1], "relu"), ([3, 6, 4, 3], "tanh"), ([2, 4, 2], "sigmoid")]
)
def test_the_numpy_mlp_exports_through_onnx_helper_and_matches_numpy(sizes, activation):
    rng = np.random.default_rng(8)
    mlp = NumpyMLP.initialise(sizes, activation, rng)
    mlp.biases = [rng.normal(size=b.shape) for b in mlp.biases]
    x = rng.normal(size=(50, sizes[0]))
    proto = onnx_graph.to_onnx(mlp, conversion.OPSET, onnx_model.INPUT_NAME, onnx_model.OUTPUT_NAME)
    checked = parity.check_parity(
        session(proto), mlp.predict_proba(x), x.astype(np.float32), 1e-5, classify=True
    )
    assert checked.samples == 50


def test_a_saved_transformer_loads_in_a_fresh_process(tmp_path):
    """The export stage loads .keras files in a new process: custom layers must register."""
    import subprocess
    import sys

    model, _spec, x = trained("transformer")
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    script = (
        "import sys, numpy as np; from pathlib import Path; from dlzoo import models; "
        "d = Path(sys.argv[1]); m = models.family('transformer').load(d); "
        "actual = m.predict(np.load(d / 'x.npy'), verbose=0); "
        "np.testing.assert_allclose(actual, np.load(d / 'expected.npy'), atol=1e-6)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
