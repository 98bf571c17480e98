"""A multilayer perceptron in NumPy: forward pass, backpropagation by the chain rule, and
mini-batch gradient descent. Binary tasks use one sigmoid output with binary cross-entropy;
multi-class tasks use softmax with cross-entropy. Both give the output error p - y.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlzoo.errors import InvalidInput
from dlzoo.models.scratch_mlp.neuron import ACTIVATIONS, sigmoid, softmax
from dlzoo.problems import predicted_classes
from dlzoo.store import save_npz

Array = np.ndarray
_EPSILON = 1e-12


@dataclass
class NumpyMLP:
    weights: list[Array]
    biases: list[Array]
    activation: str

    def __post_init__(self) -> None:
        # Own float64 copies: training must not change the caller's arrays (or fail on ints).
        self.weights = [np.array(weight, dtype=np.float64) for weight in self.weights]
        self.biases = [np.array(bias, dtype=np.float64) for bias in self.biases]

    @classmethod
    def initialise(cls, sizes: list[int], activation: str, rng: np.random.Generator) -> NumpyMLP:
        """He initialisation for ReLU, Glorot otherwise; biases start at zero."""
        if activation not in ACTIVATIONS:
            raise InvalidInput(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        gain = 2.0 if activation == "relu" else 1.0
        weights = [
            rng.normal(0.0, np.sqrt(gain / fan_in), size=(fan_in, fan_out))
            for fan_in, fan_out in itertools.pairwise(sizes)
        ]
        return cls(weights, [np.zeros(size) for size in sizes[1:]], activation)

    @property
    def binary(self) -> bool:
        return self.weights[-1].shape[1] == 1

    def forward(self, x: Array) -> tuple[Array, list[tuple[Array, Array]]]:
        """Output probabilities and, per layer, (its input, its pre-activation) for backprop."""
        function, _ = ACTIVATIONS[self.activation]
        cache = []
        a = x
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = a @ weight + bias
            cache.append((a, z))
            last = index == len(self.weights) - 1
            a = (sigmoid(z) if self.binary else softmax(z)) if last else function(z)
        return a, cache

    def loss(self, x: Array, y: Array) -> float:
        probabilities, _ = self.forward(x)
        targets = self._targets(y)
        if self.binary:
            p = np.clip(probabilities, _EPSILON, 1 - _EPSILON)
            return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
        return float(-np.mean(np.sum(targets * np.log(np.clip(probabilities, _EPSILON, 1)), axis=1)))

    def gradients(self, x: Array, y: Array) -> tuple[list[Array], list[Array]]:
        """d(mean loss)/d(each weight and bias), by the chain rule from the output back."""
        probabilities, cache = self.forward(x)
        _, derivative = ACTIVATIONS[self.activation]
        delta = (probabilities - self._targets(y)) / len(x)  # dL/dz of the output layer
        weight_grads, bias_grads = [], []
        for index in range(len(self.weights) - 1, -1, -1):
            a_in, _ = cache[index]
            weight_grads.insert(0, a_in.T @ delta)
            bias_grads.insert(0, delta.sum(axis=0))
            if index:
                _, z_below = cache[index - 1]
                delta = (delta @ self.weights[index].T) * derivative(z_below)
        return weight_grads, bias_grads

    def step(self, x: Array, y: Array, learning_rate: float) -> None:
        weight_grads, bias_grads = self.gradients(x, y)
        for index, (d_weight, d_bias) in enumerate(zip(weight_grads, bias_grads, strict=True)):
            self.weights[index] -= learning_rate * d_weight
            self.biases[index] -= learning_rate * d_bias

    def predict_proba(self, x: Array) -> Array:
        return self.forward(x)[0]

    def predict(self, x: Array) -> Array:
        return predicted_classes(self.predict_proba(x))

    def accuracy(self, x: Array, y: Array) -> float:
        return float(np.mean(self.predict(x) == y))

    def _targets(self, y: Array) -> Array:
        if self.binary:
            return y.reshape(-1, 1).astype(np.float64)
        return np.eye(self.weights[-1].shape[1])[y.astype(np.int64)]

    def save(self, path: Path) -> None:
        arrays = {f"weight_{i}": w for i, w in enumerate(self.weights)}
        arrays |= {f"bias_{i}": b for i, b in enumerate(self.biases)}
        save_npz(Path(path), activation=np.array(self.activation), **arrays)  # reproducible bytes

    @classmethod
    def load(cls, path: Path) -> NumpyMLP:
        with np.load(path, allow_pickle=False) as archive:
            count = sum(1 for name in archive.files if name.startswith("weight_"))
            return cls(
                [archive[f"weight_{i}"] for i in range(count)],
                [archive[f"bias_{i}"] for i in range(count)],
                str(archive["activation"]),
            )


@dataclass(frozen=True)
class Schedule:
    """Plain mini-batch gradient descent: a constant learning rate, reshuffled every epoch."""

    epochs: int
    batch_size: int
    learning_rate: float


def fit(
    model: NumpyMLP,
    train: tuple[Array, Array],
    val: tuple[Array, Array],
    schedule: Schedule,
    rng: np.random.Generator,
) -> list[dict[str, float]]:
    """Mini-batch gradient descent; returns per-epoch loss and accuracy, Keras-style names."""
    x, y = train
    history = []
    for _ in range(schedule.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), schedule.batch_size):
            batch = order[start : start + schedule.batch_size]
            model.step(x[batch], y[batch], schedule.learning_rate)
        history.append({
            "loss": model.loss(x, y),
            "accuracy": model.accuracy(x, y),
            "val_loss": model.loss(*val),
            "val_accuracy": model.accuracy(*val),
            "learning_rate": schedule.learning_rate,
        })  # fmt: skip
    return history
