"""One neuron and the activation functions, with the derivatives backpropagation needs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray


def sigmoid(z: Array) -> Array:
    # Split by sign so that exp never overflows for large |z|.
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp_z = np.exp(z[~positive])
    out[~positive] = exp_z / (1.0 + exp_z)
    return out


def relu(z: Array) -> Array:
    return np.maximum(z, 0.0)


def softmax(z: Array) -> Array:
    shifted = np.exp(z - z.max(axis=-1, keepdims=True))  # the shift keeps exp finite
    return shifted / shifted.sum(axis=-1, keepdims=True)


# name -> (activation, derivative with respect to its input z)
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "sigmoid": (sigmoid, lambda z: sigmoid(z) * (1.0 - sigmoid(z))),
    "relu": (relu, lambda z: (z > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
}


def neuron(inputs: Array, weights: Array, bias: float, activation: str = "sigmoid") -> tuple[float, float]:
    """Returns the pre-activation z = w . x + b and the activation f(z)."""
    z = float(np.dot(inputs, weights) + bias)
    function, _ = ACTIVATIONS[activation]
    return z, float(function(np.asarray(z)))
