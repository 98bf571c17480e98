"""The NumPy neuron and MLP from scratch: the course's worked numbers (and its misprints),
backpropagation checked against TensorFlow autodiff, numerical stability, training, persistence."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons
from sklearn.model_selection import train_test_split

from dlzoo.models.scratch_mlp.neuron import ACTIVATIONS, neuron, sigmoid, softmax
from dlzoo.models.scratch_mlp.numpy_mlp import NumpyMLP, Schedule, fit

COURSE_WEIGHTS = np.array([0.6, 0.3, 0.1])
COURSE_BIAS = -0.5

# The course's two-layer example: 4 inputs -> 3 ReLU hidden units -> 2 softmax outputs.
COURSE_INPUT = np.array([[2.0, 1.0, -1.0, 3.0]])
COURSE_HIDDEN_WEIGHTS = np.array([[0.1, 0.4, -0.2], [-0.3, 0.5, 0.1], [0.2, -0.1, 0.3], [0.4, -0.2, 0.5]])
COURSE_HIDDEN_BIASES = np.array([-0.2, 0.1, 0.3])
COURSE_OUTPUT_WEIGHTS = np.array([[0.5, -0.3], [-0.1, 0.4], [0.2, 0.6]])
COURSE_OUTPUT_BIASES = np.array([0.1, -0.2])


def _course_two_layer_net() -> NumpyMLP:
    return NumpyMLP(
        weights=[COURSE_HIDDEN_WEIGHTS.copy(), COURSE_OUTPUT_WEIGHTS.copy()],
        biases=[COURSE_HIDDEN_BIASES.copy(), COURSE_OUTPUT_BIASES.copy()],
        activation="relu",
    )


# --------------------------------------------------------------------------------------------
# 1. The course's worked numbers, and its misprints
# --------------------------------------------------------------------------------------------


def test_course_neuron_worked_example_gives_z_0_2_and_sigmoid_0_5498():
    """The course's worked neuron: x = [1, 0, 1], w = [0.6, 0.3, 0.1], b = -0.5 -> z = 0.2, 0.5498."""
    z, a = neuron(np.array([1.0, 0.0, 1.0]), COURSE_WEIGHTS, COURSE_BIAS, "sigmoid")
    assert z == pytest.approx(0.2, abs=1e-12)
    assert round(a, 4) == 0.5498


def test_course_softmax_of_printed_output_pre_activations_gives_0_4502_0_5498():
    """Softmax of the pre-activations the course prints, [1.3, 1.5], is [0.4502, 0.5498] as printed."""
    probabilities = softmax(np.array([1.3, 1.5]))
    np.testing.assert_array_equal(np.round(probabilities, 4), [0.4502, 0.5498])


def test_course_misprint_neuron_code_block_inputs_give_z_minus_0_06_not_0_2():
    """Course misprint: its code block uses x = [0.5, 0.2, 0.8] with the same w and b, yet prints
    z 0.2000 / sigmoid 0.5498 (the numbers of x = [1, 0, 1]). That code really gives z = -0.06 and
    sigmoid(z) = 0.4850."""
    z, a = neuron(np.array([0.5, 0.2, 0.8]), COURSE_WEIGHTS, COURSE_BIAS, "sigmoid")
    assert z == pytest.approx(-0.06, abs=1e-12)
    assert round(a, 4) == 0.4850
    # What the course prints is not what its code computes.
    assert round(z, 4) != 0.2000
    assert round(a, 4) != 0.5498


def test_course_misprint_two_layer_example_hidden_pre_activation_is_0_7_0_9_1_2():
    """Course misprint: the two-layer example's hidden pre-activation x @ W1 + b1 is [0.7, 0.9, 1.2],
    not the printed [1.1, -0.1, 2.0]; ReLU leaves it unchanged (all positive)."""
    net = _course_two_layer_net()
    _, cache = net.forward(COURSE_INPUT)
    (hidden_in, hidden_z), (output_in, _) = cache
    np.testing.assert_array_equal(hidden_in, COURSE_INPUT)
    np.testing.assert_allclose(hidden_z, [[0.7, 0.9, 1.2]], atol=1e-12)
    np.testing.assert_allclose(output_in, [[0.7, 0.9, 1.2]], atol=1e-12)  # relu of positives
    assert not np.allclose(hidden_z, [[1.1, -0.1, 2.0]])


def test_course_misprint_two_layer_example_output_pre_activation_is_0_6_0_67():
    """Course misprint: the two-layer example's output pre-activation relu(h) @ W2 + b2 is
    [0.6, 0.67], not the printed [1.3, 1.5]."""
    net = _course_two_layer_net()
    _, cache = net.forward(COURSE_INPUT)
    _, output_z = cache[1]
    np.testing.assert_allclose(output_z, [[0.6, 0.67]], atol=1e-12)
    assert not np.allclose(output_z, [[1.3, 1.5]])


def test_course_misprint_two_layer_example_softmax_is_0_4825_0_5175():
    """Course misprint: the two-layer example's softmax output is [0.4825, 0.5175], not the printed
    [0.4502, 0.5498] (which is softmax of the misprinted [1.3, 1.5]). NumpyMLP with two output
    units uses softmax."""
    net = _course_two_layer_net()
    assert not net.binary
    probabilities, _ = net.forward(COURSE_INPUT)
    assert probabilities.shape == (1, 2)
    np.testing.assert_array_equal(np.round(probabilities, 4), [[0.4825, 0.5175]])
    np.testing.assert_allclose(probabilities, softmax(np.array([[0.6, 0.67]])), atol=1e-12)
    assert not np.allclose(np.round(probabilities, 4), [[0.4502, 0.5498]])


# --------------------------------------------------------------------------------------------
# 2. Backpropagation against TensorFlow autodiff
# --------------------------------------------------------------------------------------------

GRADIENT_CASES = [
    # (hidden sizes, activation, output units, seed)
    pytest.param([5], "relu", 1, 0, id="binary-relu-1hidden"),
    pytest.param([6, 4], "tanh", 1, 1, id="binary-tanh-2hidden"),
    pytest.param([4, 5, 3], "sigmoid", 1, 2, id="binary-sigmoid-3hidden"),
    pytest.param([7], "tanh", 3, 3, id="softmax3-tanh-1hidden"),
    pytest.param([5, 6], "sigmoid", 4, 4, id="softmax4-sigmoid-2hidden"),
    pytest.param([6, 5, 4], "relu", 3, 5, id="softmax3-relu-3hidden"),
    pytest.param([8, 8], "relu", 4, 6, id="softmax4-relu-2hidden"),
]


def _random_network(
    hidden: list[int], activation: str, outputs: int, seed: int
) -> tuple[NumpyMLP, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_inputs, n_samples = 3, 17
    sizes = [n_inputs, *hidden, outputs]
    model = NumpyMLP.initialise(sizes, activation, rng)
    # Non-zero biases so their gradients flow through every path.
    model.biases = [rng.normal(0.0, 0.5, size=b.shape) for b in model.biases]
    x = rng.normal(0.0, 1.0, size=(n_samples, n_inputs))
    y = rng.integers(0, 2 if outputs == 1 else outputs, size=n_samples)
    return model, x, y


def _tf_loss_and_gradients(
    model: NumpyMLP, x: np.ndarray, y: np.ndarray
) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """The same network written directly in TensorFlow ops; loss and autodiff gradients."""
    import tensorflow as tf

    tf_activation = {"relu": tf.nn.relu, "tanh": tf.math.tanh, "sigmoid": tf.math.sigmoid}[model.activation]
    weights = [tf.Variable(w, dtype=tf.float64) for w in model.weights]
    biases = [tf.Variable(b, dtype=tf.float64) for b in model.biases]
    a = tf.constant(x, dtype=tf.float64)
    with tf.GradientTape() as tape:
        for index, (w, b) in enumerate(zip(weights, biases, strict=True)):
            z = tf.matmul(a, w) + b
            a = z if index == len(weights) - 1 else tf_activation(z)
        if model.weights[-1].shape[1] == 1:
            p = tf.math.sigmoid(a)
            t = tf.constant(y.reshape(-1, 1), dtype=tf.float64)
            loss = -tf.reduce_mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))
        else:
            p = tf.nn.softmax(a, axis=-1)
            t = tf.one_hot(y, depth=model.weights[-1].shape[1], dtype=tf.float64)
            loss = -tf.reduce_mean(tf.reduce_sum(t * tf.math.log(p), axis=1))
    weight_grads, bias_grads = tape.gradient(loss, [weights, biases])
    return (
        float(loss.numpy()),
        [g.numpy() for g in weight_grads],
        [g.numpy() for g in bias_grads],
    )


def _relative_error(numpy_grad: np.ndarray, tf_grad: np.ndarray) -> float:
    return float(np.max(np.abs(numpy_grad - tf_grad)) / max(np.max(np.abs(tf_grad)), 1e-12))


@pytest.mark.parametrize(("hidden", "activation", "outputs", "seed"), GRADIENT_CASES)
def test_gradients_match_tensorflow_autodiff(hidden: list[int], activation: str, outputs: int, seed: int):
    """Every weight and bias gradient of the hand-written backprop equals tf.GradientTape's, in float64."""
    model, x, y = _random_network(hidden, activation, outputs, seed)
    weight_grads, bias_grads = model.gradients(x, y)
    _, tf_weight_grads, tf_bias_grads = _tf_loss_and_gradients(model, x, y)

    assert len(weight_grads) == len(tf_weight_grads) == len(hidden) + 1
    assert len(bias_grads) == len(tf_bias_grads) == len(hidden) + 1
    for layer, (ours, theirs, weight) in enumerate(
        zip(weight_grads, tf_weight_grads, model.weights, strict=True)
    ):
        assert ours.shape == theirs.shape == weight.shape
        assert ours.dtype == np.float64
        assert _relative_error(ours, theirs) < 1e-6, f"weight gradient of layer {layer}"
    for layer, (ours, theirs, bias) in enumerate(zip(bias_grads, tf_bias_grads, model.biases, strict=True)):
        assert ours.shape == theirs.shape == bias.shape
        assert _relative_error(ours, theirs) < 1e-6, f"bias gradient of layer {layer}"


@pytest.mark.parametrize(("hidden", "activation", "outputs", "seed"), GRADIENT_CASES)
def test_loss_matches_tensorflow(hidden: list[int], activation: str, outputs: int, seed: int):
    """NumpyMLP.loss is the same mean (binary) cross-entropy as the one written in TensorFlow."""
    model, x, y = _random_network(hidden, activation, outputs, seed)
    tf_loss, _, _ = _tf_loss_and_gradients(model, x, y)
    assert model.loss(x, y) == pytest.approx(tf_loss, rel=1e-10)


# --------------------------------------------------------------------------------------------
# 3. Numerical stability
# --------------------------------------------------------------------------------------------


def test_sigmoid_is_stable_for_large_magnitudes():
    """sigmoid(+-1000) is exactly 1 / 0 with no overflow, invalid-value or divide warnings.

    (exp(-1000) underflows to 0 by design; underflow is harmless and ignored by NumPy's default.)
    """
    z = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = sigmoid(z)
    assert out[0] == 0.0
    assert out[-1] == 1.0
    assert out[2] == 0.5
    assert np.all(np.isfinite(out))
    assert np.all(np.diff(out) >= 0)
    # The naive formula would overflow at z = -1000: the test above does exercise that case.
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        1.0 / (1.0 + np.exp(-z))


def test_sigmoid_derivative_is_finite_for_large_magnitudes():
    """The sigmoid derivative used by backprop stays finite (0) at +-1000."""
    _, derivative = ACTIVATIONS["sigmoid"]
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        d = derivative(np.array([-1000.0, 1000.0]))
    np.testing.assert_array_equal(d, [0.0, 0.0])


def test_softmax_rows_sum_to_one_for_large_logits():
    """Softmax subtracts the row maximum, so huge logits neither overflow nor give NaN."""
    logits = np.array(
        [[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0], [1e6, 0.0, -1e6], [0.0, 0.0, 0.0]]
    )
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        probabilities = softmax(logits)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(probabilities[0], softmax(np.array([1.0, 2.0, 0.0])), atol=1e-12)
    np.testing.assert_allclose(probabilities[2], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(probabilities[3], [1 / 3] * 3)


# --------------------------------------------------------------------------------------------
# 4. Training
# --------------------------------------------------------------------------------------------

HISTORY_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}


def _split(x: np.ndarray, y: np.ndarray):
    """Test = 20% (random_state 42); validation = the last 20% of the training part."""
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42)
    cut = int(len(x_train) * 0.8)
    return (x_train[:cut], y_train[:cut]), (x_train[cut:], y_train[cut:]), (x_test, y_test)


def _train_moons(epochs: int = 300) -> tuple[NumpyMLP, list[dict[str, float]], tuple[np.ndarray, np.ndarray]]:
    x, y = make_moons(n_samples=1000, noise=0.1, random_state=42)
    train, val, test = _split(x, y)
    rng = np.random.default_rng(42)
    model = NumpyMLP.initialise([2, 10, 10, 1], "relu", rng)
    history = fit(model, train, val, Schedule(epochs, batch_size=32, learning_rate=0.1), rng)
    return model, history, test


@pytest.fixture(scope="module")
def trained_moons():
    return _train_moons()


def test_fit_on_moons_reaches_97_percent_test_accuracy(trained_moons):
    """A [2, 10, 10, 1] ReLU net trained 300 epochs (batch 32, lr 0.1) separates the moons."""
    model, _, (x_test, y_test) = trained_moons
    assert model.binary
    assert model.accuracy(x_test, y_test) >= 0.97


def test_fit_history_has_one_row_per_epoch_with_keras_keys(trained_moons):
    """fit returns 300 rows, each with loss/accuracy/val_loss/val_accuracy/learning_rate."""
    _, history, _ = trained_moons
    assert len(history) == 300
    for row in history:
        assert set(row) == HISTORY_KEYS
        assert all(np.isfinite(value) for value in row.values())
        assert row["learning_rate"] == 0.1
        assert 0.0 <= row["accuracy"] <= 1.0
        assert 0.0 <= row["val_accuracy"] <= 1.0


def test_fit_on_moons_decreases_the_loss(trained_moons):
    """The training loss falls by more than a factor of five over training."""
    _, history, _ = trained_moons
    assert history[-1]["loss"] < history[0]["loss"] / 5
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_fit_on_four_blobs_multiclass_reaches_95_percent():
    """Four Gaussian blobs: a softmax net (4 output units) reaches >= 95% test accuracy."""
    x, y = make_blobs(n_samples=400, centers=4, random_state=42)
    train, val, (x_test, y_test) = _split(x, y)
    rng = np.random.default_rng(42)
    model = NumpyMLP.initialise([2, 16, 4], "relu", rng)
    assert not model.binary
    history = fit(model, train, val, Schedule(50, batch_size=32, learning_rate=0.1), rng)
    assert len(history) == 50
    assert model.predict(x_test).shape == y_test.shape
    assert model.accuracy(x_test, y_test) >= 0.95


# --------------------------------------------------------------------------------------------
# 5. Determinism, persistence, validation
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights_after_fit():
    """Two runs with the same seed (initialisation and shuffling) give bit-identical weights."""
    first, first_history, _ = _train_moons(epochs=20)
    second, second_history, _ = _train_moons(epochs=20)
    for a, b in zip(first.weights + first.biases, second.weights + second.biases, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first_history == second_history


def test_save_load_round_trip_gives_identical_predictions(trained_moons, tmp_path: Path):
    """save() then load() restores the activation, every array and so the predictions exactly."""
    model, _, (x_test, _) = trained_moons
    path = tmp_path / "mlp.npz"
    model.save(path)
    loaded = NumpyMLP.load(path)
    assert loaded.activation == model.activation
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights + loaded.biases, model.weights + model.biases, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict_proba(x_test), model.predict_proba(x_test))
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))


def test_save_load_round_trip_multiclass_tanh(tmp_path: Path):
    """The round trip also keeps a softmax net with another activation."""
    model, x, _ = _random_network([5, 4], "tanh", 3, seed=11)
    model.save(tmp_path / "tanh.npz")
    loaded = NumpyMLP.load(tmp_path / "tanh.npz")
    assert loaded.activation == "tanh"
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_initialise_with_unknown_activation_raises_naming_the_valid_ones():
    """An unknown activation is refused, and the message lists sigmoid, relu and tanh."""
    with pytest.raises(ValueError, match="unknown activation 'swish'") as error:
        NumpyMLP.initialise([2, 3, 1], "swish", np.random.default_rng(0))
    for name in ("sigmoid", "relu", "tanh"):
        assert name in str(error.value)
