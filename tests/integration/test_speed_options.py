"""The train stage with every speed option of `train:` on, then the export: still one valid model."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import pytest

import dlzoo.export.stage
from dlzoo import runtime
from dlzoo.records import ExportMetadata
from tests.integration.test_train_stage import model_sha256, params_with_epochs, run_stage, training_run

pytestmark = pytest.mark.integration


@pytest.fixture
def float32_afterwards():
    yield
    runtime.configure_precision(False)  # the policy is global: later tests expect float32


# The recurrent case compiles a GRU with XLA for a minute: `make test-all` runs it.
@pytest.mark.parametrize("name", [pytest.param("imdb_gru", marks=pytest.mark.slow), "cifar_cnn"])
def test_mixed_precision_xla_mirrored_no_cudnn_train_and_export_within_tolerance(
    project_root,
    demo_data,
    tmp_path,
    store,
    float32_afterwards,
    name,
):
    params = params_with_epochs(project_root, name, 1)
    fast = dataclasses.replace(
        params.train,
        deterministic=False,  # Keras runs XLA only without op determinism
        mixed_precision=True,
        jit_compile=True,
        cudnn_rnn=False,
        distribute="mirrored",
    )
    params = dataclasses.replace(params, train=fast)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_stage(demo_data, tmp_path, params, name)
    dropped = [str(w.message) for w in caught if "jit_compile" in str(w.message)]
    assert not dropped, dropped  # Keras really compiled with XLA
    model = keras.models.load_model(tmp_path / "models" / name / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers if layer.name not in ("inputs", "outputs")} >= {
        "mixed_float16"
    }
    assert model.get_layer("outputs").dtype_policy.name == "float32"
    run = training_run(tmp_path, summary, store)
    assert run.data.params["mixed_precision"] == "true" and run.data.params["jit_compile"] == "true"
    assert run.data.params["distribute"] == "mirrored" and run.data.params["replicas"] == "1"

    runtime.configure_precision(False)  # export runs in its own process in the pipeline
    data = demo_data / "processed" / params.experiments[name].data
    out = tmp_path / "onnx" / name
    metadata = dlzoo.export.stage.run(name, params, tmp_path / "models" / name, data, out)
    assert metadata.parity.max_abs_diff <= metadata.parity.tolerance
    written = ExportMetadata.read(out / "metadata.json")
    assert written == metadata
    assert written.source_sha256 == model_sha256(tmp_path, summary)  # what finds the training run
    assert written.inputs[0].datatype in ("FP32", "INT32")


def test_xla_with_op_determinism_is_refused_because_keras_would_drop_it(project_root):
    import yaml

    from dlzoo.config import Params
    from dlzoo.config.base import build

    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["train"].update(jit_compile=True, deterministic=True)
    with pytest.raises(ValueError, match=r"train\.jit_compile: Keras turns XLA off under op determinism"):
        build(Params, raw, path="")


def test_deterministic_gpu_runs_take_the_cudnn_recurrence(project_root):
    from dlzoo.config import load_params

    params = load_params(project_root / "params.yaml")
    lstm = params.experiments["imdb_lstm"].model
    assert lstm.recurrent_dropout > 0
    adjusted, note = runtime.for_device(lstm, params.train, on_gpu=True)
    assert adjusted.recurrent_dropout == 0.0 and "cuDNN" in note
    assert runtime.for_device(lstm, params.train, on_gpu=False) == (lstm, None)
    relaxed = dataclasses.replace(params.train, deterministic=False)
    assert runtime.for_device(lstm, relaxed, on_gpu=True) == (lstm, None)
