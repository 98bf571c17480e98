"""The from-scratch family: a neuron and an MLP in plain NumPy, with hand-written backpropagation
and gradient descent (numpy_mlp, neuron), its ONNX graph written by hand (onnx_graph), and the
family hooks the stages call (family). Nothing here loads TensorFlow.
"""

from dlzoo.models.scratch_mlp.family import FAMILY

__all__ = ["FAMILY"]
