"""The masked LSTM/GRU get batches that Keras' cuDNN kernel accepts, checked on the CPU.

On a GPU, Keras' LSTM/GRU take the cuDNN kernel when their settings allow and then assert, inside
`fit`, that every mask is right-padded and that no sequence is fully masked
(`keras.src.backend.tensorflow.rnn._assert_valid_mask`). No GPU is at hand, so these tests run
that same assertion on the masks the models compute for the exact batches the train stage feeds
(the pipeline's own dataset builder, batch size and shuffle seed), on the demo profile's data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow.rnn import _assert_valid_mask

from dlzoo import models
from dlzoo.config import load_params
from dlzoo.data.splits import load_info, load_split
from dlzoo.data.text import PAD_ID, pad
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets
from dlzoo.train.shared import make_dataset

pytestmark = pytest.mark.integration
MASKED = ("imdb_lstm", "imdb_gru")


def _model_and_data(project_root: Path, demo_data: Path, name: str):
    params = load_params(project_root / "params.yaml")
    experiment = params.experiments[name]
    assert experiment.model.mask_padding and experiment.model.cell in ("lstm", "gru")
    data_dir = demo_data / "processed" / experiment.data
    spec = InputSpec.from_info(load_info(data_dir))
    model = models.family("rnn").build(experiment.model, spec, Assets(2, np.random.default_rng(0)))
    return model, experiment, data_dir, spec, params.train.seed


@pytest.mark.parametrize("name", MASKED)
def test_every_batch_the_train_stage_feeds_passes_the_cudnn_mask_check(project_root, demo_data, name):
    model, experiment, data_dir, spec, seed = _model_and_data(project_root, demo_data, name)
    assert load_info(data_dir).input.padding == "post"  # recorded where the data are described
    embedding = model.get_layer("embedding")
    recurrent = model.get_layer(experiment.model.cell)
    assert recurrent.use_cudnn == "auto"  # the builder leaves cuDNN to Keras for post-padded ids
    checked = 0
    for split, shuffle_seed in (("train", seed), ("val", None)):
        batches = make_dataset(
            load_split(data_dir, split),
            spec,
            experiment.training.batch_size,
            reconstruct=False,
            shuffle_seed=shuffle_seed,
        )
        for inputs, _ in batches:
            _assert_valid_mask(embedding.compute_mask(inputs))  # raises InvalidArgumentError if not
            checked += int(inputs.shape[0])
    assert checked == sum(load_info(data_dir).splits[split].count for split in ("train", "val"))


def test_the_check_rejects_pre_padded_ids_and_the_builder_keeps_such_data_off_cudnn(project_root, demo_data):
    model, experiment, data_dir, spec, _ = _model_and_data(project_root, demo_data, "imdb_gru")
    x, _ = load_split(data_dir, "train")
    lengths = (x != PAD_ID).sum(axis=1)
    assert lengths.min() >= 1  # every review keeps at least one id: no fully masked sequence
    pre_padded = pad([row[row != PAD_ID].tolist() for row in x[:32]], x.shape[1], "pre", "pre")
    mask = model.get_layer("embedding").compute_mask(tf.constant(pre_padded))
    with pytest.raises(tf.errors.InvalidArgumentError, match="right-padded"):
        _assert_valid_mask(mask)
    pre_spec = InputSpec(spec.shape, spec.dtype, vocab_size=spec.vocab_size, padding="pre")
    pre_model = models.family("rnn").build(experiment.model, pre_spec, Assets(2, np.random.default_rng(0)))
    assert pre_model.get_layer("gru").use_cudnn is False
