"""The same ONNX bytes for the same computation: canonical node order and tensor names.

tf2onnx's output is not reproducible byte for byte: two conversions of one model in two processes
keep different copies of duplicated constants and emit some nodes in a different order, so the
tensor and node names and the order of nodes and initializers differ while the computation is
the same. DVC hashes bytes, so every export would look new. Here each tensor gets a key from
what computes it (op type, attributes and the keys of its inputs; the bytes of a constant; the
position of a graph input), nodes are sorted topologically with ties broken by key, and every
name is replaced by one derived from that order. The top-level input and output names stay.
"""

from __future__ import annotations

import hashlib
import heapq

import onnx


def canonical(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with canonical order and names (same computation, reproducible bytes)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    kept = {value.name for value in (*result.graph.input, *result.graph.output)}
    _drop_identities(result.graph, kept)
    _sort_graph(result.graph, outer={})
    _rename_graph(result.graph, _Names(kept))
    result.graph.name = "dlzoo"
    result.graph.doc_string = ""  # tf2onnx names the traced function there, with a process-wide counter
    return result


class _Names:
    """New names in order of first use; the graph's own input and output names are kept."""

    def __init__(self, kept: set[str]) -> None:
        self.kept = kept
        self.renamed: dict[str, str] = {"": ""}
        self.tensors = 0
        self.nodes = 0

    def tensor(self, old: str) -> str:
        if old not in self.renamed:
            self.renamed[old] = old if old in self.kept else f"t{self.tensors}"
            self.tensors += old not in self.kept
        return self.renamed[old]

    def node(self, op_type: str) -> str:
        self.nodes += 1
        return f"{op_type}_{self.nodes}"


def _digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()


def _drop_identities(graph: onnx.GraphProto, kept: set[str]) -> None:
    """Removes Identity nodes on local tensors, then adds one back only where a graph output repeats.

    tf2onnx puts the Identity on either of two equal outputs of a loop body, depending on the run.
    """
    local = {value.name for value in graph.input} | {out for node in graph.node for out in node.output}
    replaced: dict[str, str] = {}
    remaining = []
    for node in graph.node:
        node.input[:] = [replaced.get(name, name) for name in node.input]
        if node.op_type == "Identity" and node.input[0] in local and node.output[0] not in kept:
            replaced[node.output[0]] = node.input[0]
            continue
        remaining.append(node)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_outer(attribute.g, replaced)
                _drop_identities(attribute.g, kept)
    del graph.node[:]
    graph.node.extend(remaining)
    seen = {value.name for value in graph.input}
    for value in graph.output:
        name = replaced.get(value.name, value.name)
        if name in seen:  # the same tensor twice (or a graph input) as an output: copy it once more
            copy = f"{name}__output_{len(seen)}"
            graph.node.append(onnx.helper.make_node("Identity", [name], [copy]))
            name = copy
        seen.add(name)
        value.name = name


def _rename_outer(graph: onnx.GraphProto, replaced: dict[str, str]) -> None:
    """Follows the outer renames of `_drop_identities` inside a nested graph."""
    for node in graph.node:
        node.input[:] = [replaced.get(name, name) for name in node.input]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_outer(attribute.g, replaced)
    for value in graph.output:
        value.name = replaced.get(value.name, value.name)


def _sort_graph(graph: onnx.GraphProto, outer: dict[str, str]) -> str:
    """Sorts the nodes of `graph` (and of the graphs nested in them); returns the graph's key."""
    keys = dict(outer)
    for position, value in enumerate(graph.input):
        keys[value.name] = _digest("input", str(position), value.type.SerializeToString())
    for tensor in graph.initializer:
        keys[tensor.name] = _digest("initializer", _without_name(tensor))
    node_keys = _sort_nodes(graph, keys)
    return _digest("graph", *node_keys, *(keys.get(value.name, "") for value in graph.output))


def _rename_graph(graph: onnx.GraphProto, names: _Names) -> None:
    """Names every tensor and node in order of first use, nested graphs where their node is."""
    for value in graph.input:
        value.name = names.tensor(value.name)
    for node in graph.node:
        node.input[:] = [names.tensor(name) for name in node.input]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_graph(attribute.g, names)
        node.output[:] = [names.tensor(name) for name in node.output]
        node.name = names.node(node.op_type)
        if not node.domain:
            node.ClearField("domain")
    for value in (*graph.output, *graph.value_info):
        value.name = names.tensor(value.name)
    for tensor in graph.initializer:
        tensor.name = names.tensor(tensor.name)
    _sort_field(graph.initializer)
    _sort_field(graph.value_info)
    _clear_symbolic_dims(graph)


def _sort_nodes(graph: onnx.GraphProto, keys: dict[str, str]) -> list[str]:
    """Kahn's topological sort, the smallest key first among the ready nodes; fills `keys`."""
    nodes = list(graph.node)
    produced_by = {output: index for index, node in enumerate(nodes) for output in node.output}
    waiting = {
        index: {name for name in _inputs(node) if name in produced_by} for index, node in enumerate(nodes)
    }
    users: dict[int, list[int]] = {}
    for index, needed in waiting.items():
        for name in needed:
            users.setdefault(produced_by[name], []).append(index)
    ready = [(_node_key(nodes[i], keys), i) for i, needed in waiting.items() if not needed]
    heapq.heapify(ready)
    ordered, node_keys = [], []
    while ready:
        key, index = heapq.heappop(ready)
        ordered.append(nodes[index])
        node_keys.append(key)
        for position, output in enumerate(nodes[index].output):
            keys[output] = _digest(key, str(position))
        for user in users.get(index, []):
            waiting[user] -= set(nodes[index].output)
            if not waiting[user]:
                heapq.heappush(ready, (_node_key(nodes[user], keys), user))
    if len(ordered) != len(nodes):
        raise ValueError("the ONNX graph has a cycle; it cannot be put in canonical order")
    del graph.node[:]
    graph.node.extend(ordered)
    return node_keys


def _node_key(node: onnx.NodeProto, keys: dict[str, str]) -> str:
    parts = [node.op_type, node.domain, *(keys.get(name, name) for name in node.input)]
    for attribute in sorted(node.attribute, key=lambda item: item.name):
        if attribute.type == onnx.AttributeProto.GRAPH:
            parts.append(_sort_graph(attribute.g, keys))
        else:
            parts.append(attribute.SerializeToString())
    return _digest(*parts)


def _inputs(node: onnx.NodeProto) -> set[str]:
    """The node's inputs and the outer tensors its nested graphs read."""
    found = set(node.input)
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            inner = attribute.g
            local = {value.name for value in inner.input} | {tensor.name for tensor in inner.initializer}
            local |= {output for inner_node in inner.node for output in inner_node.output}
            found |= {name for inner_node in inner.node for name in _inputs(inner_node)} - local
    return found - {""}


def _without_name(tensor: onnx.TensorProto) -> bytes:
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.ClearField("name")
    return copy.SerializeToString()


def _sort_field(field) -> None:
    items = sorted(field, key=lambda item: item.name)
    del field[:]
    field.extend(items)


def _clear_symbolic_dims(graph: onnx.GraphProto) -> None:
    """tf2onnx numbers unknown dimensions (`unk__161`) from a global counter: keep them unnamed."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param.startswith("unk__"):
                dim.ClearField("dim_param")
