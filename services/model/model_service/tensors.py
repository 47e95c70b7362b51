"""numpy arrays <-> TensorFlow `TensorProto`, the payload of TF Serving's Predict.

Arrays travel in `tensor_content` (raw little-endian bytes), the compact form TF Serving itself
answers with; reading also accepts the typed `*_val` fields other servers may fill.
The messages come from TensorFlow's protobuf modules, loaded without the rest of TensorFlow
(`tf_protos`).
"""
from __future__ import annotations

from mlstudio.common.lazy import lazy_module

from .tf_protos import load

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

tensor_pb2, tensor_shape_pb2, types_pb2 = load(
    "tensorflow.core.framework.tensor_pb2", "tensorflow.core.framework.tensor_shape_pb2", "tensorflow.core.framework.types_pb2")

# numpy dtype name -> TensorProto dtype: names, so that numpy loads with the first tensor converted.
_BY_DTYPE_NAME = {
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "float16": types_pb2.DT_HALF,
    "uint8": types_pb2.DT_UINT8,
    "int8": types_pb2.DT_INT8,
    "uint16": types_pb2.DT_UINT16,
    "int16": types_pb2.DT_INT16,
    "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64,
    "bool": types_pb2.DT_BOOL,
}
_BY_PROTO_DTYPE = {proto: name for name, proto in _BY_DTYPE_NAME.items()}
# Which repeated field holds the values when `tensor_content` is empty.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
}


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """`array` as a TensorProto with its bytes in `tensor_content`."""
    array = np.asarray(array, order="C")  # (ascontiguousarray would make scalars 1-d)
    if array.dtype.name not in _BY_DTYPE_NAME:
        raise TypeError(f"cannot send a tensor of dtype {array.dtype}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape])
    return tensor_pb2.TensorProto(dtype=_BY_DTYPE_NAME[array.dtype.name], tensor_shape=shape, tensor_content=little.tobytes())


def from_proto(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The numpy array a TensorProto holds."""
    if proto.dtype not in _BY_PROTO_DTYPE:
        raise TypeError(f"cannot read a tensor of dtype {types_pb2.DataType.Name(proto.dtype)}")
    dtype = np.dtype(_BY_PROTO_DTYPE[proto.dtype])
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    values = list(getattr(proto, _VALUE_FIELD[proto.dtype]))
    if proto.dtype == types_pb2.DT_HALF:
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.array(values, dtype=dtype)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 0:
        return np.zeros(shape, dtype=dtype)
    # TensorFlow's rule: a shorter list is padded with its last value.
    padded = np.concatenate([flat, np.full(count - flat.size, flat[-1], dtype=dtype)])
    return padded.reshape(shape)
