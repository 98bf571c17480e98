"""The NumPy MLP as an ONNX graph, built node by node: tf2onnx converts Keras models only."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlzoo.models.scratch_mlp.numpy_mlp import NumpyMLP


def to_onnx(mlp: NumpyMLP, opset: int, input_name: str, output_name: str) -> onnx.ModelProto:
    """The NumPy MLP as an ONNX graph: MatMul + Add per layer, the activations, then the output."""
    nodes, initializers = [], []
    current = input_name
    activation_op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[mlp.activation]
    for index, (weight, bias) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        last = index == len(mlp.weights) - 1
        initializers += [
            numpy_helper.from_array(weight.astype(np.float32), f"weight_{index}"),
            numpy_helper.from_array(bias.astype(np.float32), f"bias_{index}"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"weight_{index}"], [f"matmul_{index}"]),
            helper.make_node("Add", [f"matmul_{index}", f"bias_{index}"], [f"z_{index}"]),
        ]
        output = output_name if last else f"a_{index}"
        if last:
            op = "Sigmoid" if mlp.binary else "Softmax"
            nodes.append(
                helper.make_node(op, [f"z_{index}"], [output], **({} if mlp.binary else {"axis": -1}))
            )
        else:
            nodes.append(helper.make_node(activation_op, [f"z_{index}"], [output]))
        current = output
    graph = helper.make_graph(
        nodes,
        "numpy_mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", mlp.weights[0].shape[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", mlp.weights[-1].shape[1]])],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dlzoo")
    onnx.checker.check_model(proto)
    return proto
