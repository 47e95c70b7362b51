"""Reads a TensorFlow.js graph model (`model.json` + its weight files) as a TensorFlow function.

A TF.js graph model is a TensorFlow GraphDef written as proto3 JSON, whose constants were moved
out into a weights manifest (raw little-endian tensors, possibly quantized). This module puts
the weights back into the GraphDef's `Const` nodes and imports the graph into a
`tf.compat.v1.wrap_function`, so the model becomes an ordinary TensorFlow function.

Written here rather than taken from `tensorflowjs` (PyPI): version 4.22 pulls in JAX, Flax,
tf-keras, TensorFlow Hub and TensorFlow Decision Forests (whose versions pip's resolver
backtracks over against TensorFlow 2.21), and its graph-model reader is a private part of its
converter. The format is small: what TF.js itself writes is handled, namely

- float32 weights stored as float16 or as affine uint8/uint16 (`quantization` in the manifest);
- int64 constants, which TF.js stores as int32 (it has no int64): the manifest says `int32` while
  the GraphDef node says `DT_INT64`, and the node's type wins;
- `_FusedConv2D` / `FusedDepthwiseConv2dNative`, ops TF.js's converter invents: rewritten as the
  plain convolution followed by `BiasAdd` and the activation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_MANIFEST_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
# Activations TF.js folds into its fused convolutions (`fused_ops` attribute, after BiasAdd).
_ACTIVATIONS = {"Relu", "Relu6", "Elu", "Sigmoid", "Tanh", "LeakyRelu"}


class GraphModelError(Exception):
    """The graph model cannot be read; the message says what is wrong with it."""


def read_weights(manifest: list[dict], directory: Path) -> dict[str, np.ndarray]:
    """Every weight of the manifest, dequantized, by name (in its manifest dtype)."""
    weights = {}
    for group in manifest:
        data = b"".join((directory / path).read_bytes() for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            shape = [int(d) for d in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quantization = entry.get("quantization")
            stored = np.dtype(_QUANTIZED[quantization["dtype"]] if quantization else _MANIFEST_DTYPES[entry["dtype"]])
            end = offset + count * stored.itemsize
            if end > len(data):
                raise GraphModelError(f"the weight files end before weight {entry['name']!r}")
            values = np.frombuffer(data, dtype=stored.newbyteorder("<"), count=count, offset=offset)
            offset = end
            if quantization and quantization["dtype"] != "float16":
                values = values.astype(np.float32) * quantization["scale"] + quantization["min"]
            weights[entry["name"]] = values.astype(_MANIFEST_DTYPES[entry["dtype"]]).reshape(shape)
        if offset != len(data):
            raise GraphModelError(f"the weight files hold {len(data) - offset} bytes more than the manifest lists")
    return weights


def _unfuse(graph_def) -> None:
    """Rewrites TF.js's fused convolutions as plain TensorFlow ops (same node names for outputs)."""
    from tensorflow.core.framework import node_def_pb2

    rewritten = []
    for node in graph_def.node:
        if node.op not in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            rewritten.append(node)
            continue
        fused = [op.decode() for op in node.attr["fused_ops"].list.s]
        data_inputs = [name for name in node.input if not name.startswith("^")]
        conv = node_def_pb2.NodeDef(name=node.name + "/conv", op="Conv2D" if node.op == "_FusedConv2D" else "DepthwiseConv2dNative",
                                    input=data_inputs[:2], device=node.device)
        for key in ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings"):
            if key in node.attr:
                conv.attr[key].CopyFrom(node.attr[key])
        last, extra = conv.name, data_inputs[2:]
        rewritten.append(conv)
        for op in fused:
            if op == "BiasAdd":
                step = node_def_pb2.NodeDef(name=f"{node.name}/bias", op="BiasAdd", input=[last, extra.pop(0)])
                step.attr["T"].CopyFrom(node.attr["T"])
                if "data_format" in node.attr:
                    step.attr["data_format"].CopyFrom(node.attr["data_format"])
            elif op in _ACTIVATIONS:
                step = node_def_pb2.NodeDef(name=f"{node.name}/{op}", op=op, input=[last])
                step.attr["T"].CopyFrom(node.attr["T"])
                if op == "LeakyRelu":
                    step.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
            else:
                raise GraphModelError(f"node {node.name!r} fuses {op!r}, which this reader does not rewrite")
            rewritten.append(step)
            last = step.name
        # The last op of the chain takes the fused node's name, so its consumers need no change.
        rewritten[-1].name = node.name
    del graph_def.node[:]
    graph_def.node.extend(rewritten)


def load_graph_def(model_json: Path):
    """The model's GraphDef with its weights inlined, and the model.json's `signature`."""
    import tensorflow as tf
    from google.protobuf import json_format

    try:
        model = json.loads(model_json.read_text())
        topology = model["modelTopology"]
        manifest = model["weightsManifest"]
    except (OSError, ValueError, KeyError) as exc:
        raise GraphModelError(f"{model_json.name} is not a TF.js graph model ({exc})") from None
    weights = read_weights(manifest, model_json.parent)
    graph_def = tf.compat.v1.GraphDef()
    json_format.ParseDict({"node": topology["node"], "versions": topology.get("versions", {})}, graph_def,
                          ignore_unknown_fields=True)
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            # The node's dtype wins: TF.js stores int64 constants as int32.
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights.pop(node.name).astype(dtype.as_numpy_dtype)))
    if weights:
        raise GraphModelError(f"the manifest has weights no node uses: {sorted(weights)[:5]}")
    _unfuse(graph_def)
    return graph_def, model.get("signature") or topology.get("signature") or {}


def _tensor(graph, name: str):
    return graph.get_tensor_by_name(name if ":" in name else name + ":0")


def free_batch(graph_def) -> None:
    """Lets a graph exported for a batch of one take any batch: its placeholders' first dimension
    becomes unknown, and every Reshape to a computed shape `[1, ...]` (ONNX exports compute them
    from constants) gets the constant shape `[-1, ...]` with its other sizes resolved.

    Raises GraphModelError when a Reshape's target does not start with the batch of one."""
    import numpy as np
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    reshapes = [node for node in graph_def.node if node.op == "Reshape"]
    with tf.compat.v1.Session(graph=graph) as session:
        # The targets depend on constants only: an input would have to be fed.
        targets = session.run([_tensor(graph, node.input[1]) for node in reshapes]) if reshapes else []
    for node, target in zip(reshapes, targets):
        source = _tensor(graph, node.input[0]).shape.as_list()
        if not source or source[0] != 1 or None in source or int(target[0]) != 1:
            raise GraphModelError(f"reshape {node.name!r} ({source} -> {list(target)}) does not keep a batch of one first")
        known = int(np.prod([d for d in target if d != -1]))
        sizes = [int(np.prod(source)) // known if d == -1 else int(d) for d in target]
        shape = graph_def.node.add(name=node.name + "/batch_free_shape", op="Const")
        shape.attr["dtype"].type = tf.int32.as_datatype_enum
        shape.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([-1, *sizes[1:]], np.int32)))
        node.input[1] = shape.name
        node.attr["Tshape"].type = tf.int32.as_datatype_enum
    for node in graph_def.node:
        if node.op == "Placeholder" and node.attr["shape"].shape.dim:
            node.attr["shape"].shape.dim[0].size = -1


def to_function(model_json: Path, inputs: list[str], outputs: list[str], *, any_batch: bool = False):
    """A concrete function running the graph: tensors for `inputs` in, `outputs` out (by name).
    With `any_batch`, a graph exported for a batch of one is made to take any (`free_batch`)."""
    import tensorflow as tf

    graph_def, _ = load_graph_def(model_json)
    if any_batch:
        free_batch(graph_def)
    placeholders = {node.name: node for node in graph_def.node if node.op == "Placeholder"}

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    missing = [name for name in inputs if name.split(":")[0] not in placeholders]
    if missing:
        raise GraphModelError(f"the graph has no input {missing}; it has {sorted(placeholders)}")
    return wrapped.prune([wrapped.graph.get_tensor_by_name(name) for name in inputs],
                         [wrapped.graph.get_tensor_by_name(name) for name in outputs])
