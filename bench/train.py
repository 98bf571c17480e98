"""Training throughput per family: the course's plain `fit` on NumPy arrays vs our tf.data input
pipeline, alone and with each speed option of params.yaml (XLA, mixed precision, no cuDNN RNN).

Each family is its params.yaml experiment's real architecture on random data of the real shapes.
Every variant builds a fresh model, runs one warm-up epoch (tracing, XLA compilation) and then
times `--epochs` more; it prints samples per second. On a CPU, mixed precision and XLA are not
expected to help (float16 is emulated); the numbers that matter come from a GPU.

    python bench/train.py                    # every family, every option
    python bench/train.py --family cnn --samples 4096
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from dlzoo import models, runtime
from dlzoo.config import load_params
from dlzoo.inputs import InputSpec
from dlzoo.train import loop, shared

# family: (experiment in params.yaml, input spec of its real data, samples by default)
FAMILIES = {
    "mlp": ("mnist_baseline", InputSpec((28, 28), "float32", scale=1 / 255), 8192),
    "cnn": ("cifar_cnn", InputSpec((32, 32, 3), "float32", scale=1 / 255), 4096),
    "rnn (lstm)": ("imdb_lstm", InputSpec((200,), "int32", vocab_size=10000), 1024),
    "rnn (gru)": ("imdb_gru", InputSpec((200,), "int32", vocab_size=10000), 1024),
    "transformer": ("imdb_transformer", InputSpec((200,), "int32", vocab_size=20000), 2048),
    "autoencoder": ("mnist_autoencoder", InputSpec((28, 28), "float32", scale=1 / 255), 8192),
    "transfer": ("cats_dogs_transfer", InputSpec((32, 32, 3), "float32", scale=1 / 255), 256),
}
VARIANTS = ("numpy fit", "tf.data", "tf.data + XLA", "tf.data + mixed precision", "tf.data, no cuDNN RNN")


def random_data(spec: InputSpec, outputs: int, count: int, rng: np.random.Generator):
    if spec.vocab_size:
        x = rng.integers(0, spec.vocab_size, size=(count, *spec.shape)).astype(np.int32)
    else:
        x = rng.integers(0, 256, size=(count, *spec.shape)).astype(np.float32)
    return x, rng.integers(0, max(outputs, 2), size=count).astype(np.int64)


def samples_per_second(experiment, spec: InputSpec, variant: str, count: int, epochs: int) -> float:
    keras.backend.clear_session()
    runtime.configure_precision(variant.endswith("mixed precision"))
    family, config = experiment.family, experiment.training
    model = models.family(family).builder(experiment.model, spec)
    runtime.set_cudnn(model, enabled=not variant.endswith("no cuDNN RNN"))
    reconstruct = models.family(family).reconstructs
    outputs = 1 if reconstruct else experiment.model.output_units
    x, y = random_data(spec, outputs, count, np.random.default_rng(0))
    loop.compile_model(model, config, config.learning_rate, jit_compile=variant.endswith("XLA"))
    if variant == "numpy fit":  # the course's way: arrays straight into fit
        targets = x.reshape(count, -1) * (spec.scale or 1.0) if reconstruct else y
        if spec.scale:
            x = x.astype(np.float32)

        def fit(epoch_count):
            model.fit(x, targets, batch_size=config.batch_size, epochs=epoch_count, verbose=0)
    else:
        dataset = shared.make_dataset(
            (x, y), spec, config.batch_size, reconstruct=reconstruct, shuffle_seed=0
        )

        def fit(epoch_count):
            model.fit(dataset, epochs=epoch_count, verbose=0)

    fit(1)  # warm-up: tracing and compilation
    started = time.perf_counter()
    fit(epochs)
    return count * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", action="append", choices=list(FAMILIES), help="repeatable; default: all")
    parser.add_argument("--samples", type=int, help="samples per epoch (default: per family)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    gpus = runtime.gpu_names()
    device = ", ".join(gpus) if gpus else "CPU only"
    details = [
        tf.config.experimental.get_device_details(gpu).get("device_name", "")
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; {device} {' '.join(details)}; "
        f"{os.cpu_count()} CPUs; samples/s over {args.epochs} timed epoch(s) after a warm-up epoch"
    )
    print(f"{'family':14} {'experiment':20} " + " ".join(f"{v:>26}" for v in VARIANTS))
    for family in args.family or list(FAMILIES):
        name, spec, default_count = FAMILIES[family]
        experiment = params.experiment(name)
        count = args.samples or default_count
        cells = []
        for variant in VARIANTS:
            if variant.endswith("no cuDNN RNN") and experiment.family != "rnn":
                cells.append("-")
                continue
            cells.append(f"{samples_per_second(experiment, spec, variant, count, args.epochs):,.0f}")
        print(f"{family:14} {name:20} " + " ".join(f"{cell:>26}" for cell in cells), flush=True)
    runtime.configure_precision(False)


if __name__ == "__main__":
    main()
