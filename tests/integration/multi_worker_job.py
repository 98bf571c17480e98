"""One worker of the two-worker test: `python -m tests.integration.multi_worker_job INDEX OUT_DIR`.

TF_CONFIG (set by the test) names both workers; each trains the same tiny model with
MultiWorkerMirroredStrategy and writes its final weights and history.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from dlzoo import models
from dlzoo.train import loop
from dlzoo.train.shared import FitSettings
from tests.unit.test_models import TINY, plain_training, tiny_data


def main(index: int, out_dir: Path) -> None:
    loop.set_seeds(7, deterministic=True)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    config, spec = TINY["mlp"]  # with batch normalisation: its moving averages must agree too
    with strategy.scope():
        model = models.family("mlp").builder(config, spec)
    x, y = tiny_data(spec, config.output_units, np.random.default_rng(1), count=64)
    history = loop.train(
        model,
        plain_training("sparse_categorical_crossentropy", epochs=3),
        {"train": (x, y), "val": (x, y)},
        spec,
        FitSettings(seed=7, strategy=strategy, verbose=1),
    )
    np.savez(out_dir / f"weights-{index}.npz", *model.get_weights())
    (out_dir / f"history-{index}.json").write_text(json.dumps(history))


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
