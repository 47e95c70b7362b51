"""Refuses SavedModels whose graphs do anything but compute, by reading `saved_model.pb` alone.

A SavedModel is a program: `tf.io.read_file`, `tf.io.write_file`, `tf.print` to a file, a
`SaveV2` with a prefix of its own choosing, a table initialised from a text file... would run
inside TF Serving (or the converter) with their files and network. TensorFlow's loader runs a
TF1-style graph's restore and init ops while loading, so this check parses the raw proto
(`saved_model_pb2`) and runs BEFORE anything loads the model: on an uploaded (or trained)
SavedModel before the exporter loads it, and on every SavedModel before it is installed into TF
Serving's repository (`TFServingRepository.install`), which is where each served model passes.

What is checked, in every meta graph: every node of the graph, every node of EVERY function of
its library (reachable or not: gradients, the object graph's concrete functions and anything a
loader might call are all in there), and every function named by an attribute (`f` of a call,
`then_branch`, `body`...), since a name that is no function of the library is run as an op.

What is allowed:

- the pure computations in `ALLOWED_OPS` (an allowlist, grouped by kind below): arithmetic,
  arrays, neural-network layers, image decoding/resizing/NMS, strings, parsing, random numbers,
  control flow and calls into the library, variables and in-memory tables. Everything else is
  refused, named in the error: files, network, Python, printing, datasets, summaries, readers,
  and any op not listed (new ops are refused until someone adds them here, on purpose);
- the checkpoint ops (`CHECKPOINT_OPS`: SaveV2, RestoreV2, MergeV2Checkpoints and their V1
  forms), which every SavedModel holds because loaders restore its variables with them, only
  where the SavedModel's saver (`saver_def`) has them, and only with their file names made from
  the file name the loader gives the saver:
  - TF2 SavedModels keep them in the saver's own save and restore functions, called from the
    graph's two saver nodes with the `saver_filename` placeholder. Such a function may be
    called by nothing else (not by a serving function, another function, the object graph),
    and in it each file name must derive from its first argument;
  - TF1 SavedModels keep them in the graph (`save/SaveV2`, `save/RestoreV2`...), where each
    file name must derive from the saver's filename tensor (which the loader feeds);
  - "derive" means: a restore op reads exactly that file name (through Identity at most); a
    save may extend it with StringJoin, ShardedFilename, Pack, Select and constants that are no
    absolute path and hold no `..` (the saver appends `_temp/part`, `.part`);
  - no signature's tensors and no init/main op (collections) may depend on a checkpoint op or
    a saver call, and the restore op may depend on restoring ones only (never on a save).
  So the loader can restore variables from the model's own `variables/`, and nothing a request
  or an init op runs reads or writes a file.

SavedModels in other forms (`saved_model.pbtxt`, chunked `saved_model.cpb`) are refused: a
loader might prefer them to the `saved_model.pb` that was checked.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ONLY_COMPUTE = "models may only compute"

ARRAY_OPS = frozenset("""
    Const Identity IdentityN Placeholder PlaceholderWithDefault NoOp StopGradient PreventGradient Snapshot
    GuaranteeConst EnsureShape CheckNumerics CheckNumericsV2 Assert Reshape Squeeze ExpandDims Shape ShapeN Size
    Rank Fill Empty ZerosLike OnesLike Pack Unpack Concat ConcatV2 ConcatOffset Split SplitV Slice StridedSlice
    Tile Pad PadV2 MirrorPad Transpose ConjugateTranspose Reverse ReverseV2 ReverseSequence Gather GatherV2
    GatherNd ScatterNd TensorScatterUpdate TensorScatterAdd TensorScatterSub TensorScatterMax TensorScatterMin
    Where Select SelectV2 Range LinSpace OneHot Cast Bitcast BroadcastTo BroadcastArgs BroadcastGradientArgs
    Unique UniqueV2 UniqueWithCounts InvertPermutation Diag DiagPart MatrixDiag MatrixDiagV2 MatrixDiagV3
    MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3 MatrixBandPart
    SpaceToBatchND BatchToSpaceND SpaceToDepth DepthToSpace ExtractImagePatches TopKV2 InTopKV2 NthElement
    LowerBound UpperBound Bucketize HistogramFixedWidth ClipByValue DataFormatDimMap DataFormatVecPermute
    QuantizeAndDequantizeV2 QuantizeAndDequantizeV3 QuantizeAndDequantizeV4 FakeQuantWithMinMaxArgs
    FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel ListDiff SetSize
""".split())

MATH_OPS = frozenset("""
    Add AddV2 AddN Sub Mul MulNoNan Div DivNoNan RealDiv FloorDiv FloorMod TruncateDiv TruncateMod Mod Maximum
    Minimum Pow SquaredDifference Neg Abs Sign Reciprocal Inv Square Sqrt Rsqrt Exp Expm1 Log Log1p Sin Cos Tan
    Asin Acos Atan Atan2 Sinh Cosh Tanh Asinh Acosh Atanh Sigmoid Erf Erfc Erfinv Ndtri Floor Ceil Round Rint
    IsNan IsInf IsFinite Equal NotEqual Less LessEqual Greater GreaterEqual ApproximateEqual LogicalAnd LogicalOr
    LogicalNot BitwiseAnd BitwiseOr BitwiseXor Invert LeftShift RightShift PopulationCount Sum Mean Prod Max Min
    All Any ArgMax ArgMin Cumsum Cumprod CumulativeLogsumexp EuclideanNorm MatMul BatchMatMul BatchMatMulV2
    BatchMatMulV3 Einsum SegmentSum SegmentMean SegmentMax SegmentMin SegmentProd UnsortedSegmentSum
    UnsortedSegmentMax UnsortedSegmentMin UnsortedSegmentProd Cross Lgamma Digamma Xlogy Xlog1py Xdivy
    ComplexAbs Real Imag Complex Angle Conj Softplus Softsign
""".split())

NN_OPS = frozenset("""
    Conv Conv2D Conv3D Conv2DBackpropInput Conv3DBackpropInputV2 DepthwiseConv2dNative
    DepthwiseConv2dNativeBackpropInput BiasAdd BiasAddV1 MaxPool MaxPoolV2 MaxPool3D MaxPoolWithArgmax AvgPool
    AvgPool3D FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 Relu Relu6 Elu Selu LeakyRelu Softmax LogSoftmax
    LRN L2Loss Dilation2D FractionalMaxPool FractionalAvgPool
""".split())

IMAGE_OPS = frozenset("""
    ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea ScaleAndTranslate CropAndResize DecodeJpeg
    DecodePng DecodeBmp DecodeGif DecodeImage DecodeAndCropJpeg DecodeWebP EncodeJpeg EncodeJpegVariableQuality
    EncodePng ExtractJpegShape AdjustContrast AdjustContrastv2 AdjustHue AdjustSaturation RGBToHSV HSVToRGB
    NonMaxSuppression NonMaxSuppressionV2 NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5
    NonMaxSuppressionWithOverlaps CombinedNonMaxSuppression DrawBoundingBoxes DrawBoundingBoxesV2
    ImageProjectiveTransformV2 ImageProjectiveTransformV3 SampleDistortedBoundingBoxV2
    StatelessSampleDistortedBoundingBox GenerateBoundingBoxProposals
""".split())

STRING_OPS = frozenset("""
    StringJoin StringFormat StringLength StringSplit StringSplitV2 StringToNumber AsString Substr RegexReplace
    StaticRegexReplace RegexFullMatch StaticRegexFullMatch StringLower StringUpper StringStrip ReduceJoin
    StringToHashBucket StringToHashBucketFast StringToHashBucketStrong DecodeBase64 EncodeBase64 DecodeRaw
    DecodePaddedRaw UnicodeDecode UnicodeDecodeWithOffsets UnicodeEncode UnicodeTranscode ShardedFilename
    ShardedFilespec
""".split())

PARSING_OPS = frozenset("""
    ParseExample ParseExampleV2 ParseSingleExample ParseSequenceExample ParseSequenceExampleV2
    ParseSingleSequenceExample DecodeCSV SerializeTensor ParseTensor
""".split())

RANDOM_OPS = frozenset("""
    RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal ParameterizedTruncatedNormal Multinomial
    RandomShuffle RandomGamma RandomPoisson RandomPoissonV2 StatelessRandomUniform StatelessRandomNormal
    StatelessTruncatedNormal StatelessRandomUniformInt StatelessMultinomial StatelessRandomUniformV2
    StatelessRandomNormalV2 StatelessTruncatedNormalV2 StatelessRandomUniformIntV2
    StatelessRandomUniformFullIntV2 StatelessRandomGetKeyCounter StatelessRandomGetKeyCounterAlg
    StatelessRandomGetAlg StatelessShuffle RngReadAndSkip RngSkip StatefulUniform StatefulUniformInt
    StatefulStandardNormalV2 StatefulTruncatedNormal
""".split())

CONTROL_FLOW_OPS = frozenset("""
    If StatelessIf While StatelessWhile Case StatelessCase PartitionedCall StatefulPartitionedCall Switch Merge
    Enter Exit RefEnter RefExit RefSwitch RefMerge NextIteration RefNextIteration LoopCond ControlTrigger
    EmptyTensorList TensorListReserve TensorListFromTensor TensorListGetItem TensorListSetItem TensorListStack
    TensorListPushBack TensorListPushBackBatch TensorListPopBack TensorListLength TensorListElementShape
    TensorListConcat TensorListConcatV2 TensorListSplit TensorListGather TensorListScatter TensorListScatterV2
    TensorListScatterIntoExistingList TensorListResize TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3
    TensorArrayGatherV3 TensorArrayScatterV3 TensorArraySizeV3 TensorArrayConcatV3 TensorArraySplitV3
    TensorArrayCloseV3 TensorArrayGradV3
""".split())

STATE_OPS = frozenset("""
    VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp VarIsInitializedOp
    DestroyResourceOp ResourceGather ResourceGatherNd DisableCopyOnRead VariableV2 Variable Assign AssignAdd
    AssignSub IsVariableInitialized HashTable HashTableV2 MutableHashTable MutableHashTableV2
    MutableDenseHashTableV2 AnonymousHashTable LookupTableFind LookupTableFindV2 LookupTableImportV2
    LookupTableSizeV2 LookupTableInsertV2 LookupTableExportV2 InitializeTable InitializeTableV2
""".split())

ALLOWED_OPS = (ARRAY_OPS | MATH_OPS | NN_OPS | IMAGE_OPS | STRING_OPS | PARSING_OPS | RANDOM_OPS
               | CONTROL_FLOW_OPS | STATE_OPS)

# Allowed only in the saver (see the module docstring); index of each op's file-name inputs.
SAVE_OPS = {"SaveV2": (0,), "MergeV2Checkpoints": (0, 1), "Save": (0,), "SaveSlices": (0,)}
RESTORE_OPS = {"RestoreV2": (0,), "Restore": (0,), "RestoreSlice": (0,)}
CHECKPOINT_OPS = {**SAVE_OPS, **RESTORE_OPS}
# What a checkpoint file name may be made with, from the loader's file name and constants.
_PATH_OPS = frozenset({"Identity", "StringJoin", "ShardedFilename", "ShardedFilespec", "Pack", "Select", "SelectV2",
                       "StaticRegexFullMatch", "PlaceholderWithDefault"})
_IDENTITY = frozenset({"Identity"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_OTHER_FORMS = ("saved_model.pbtxt", "saved_model.cpb")

# Words in op names, for saying what a refused op does.
_WHAT_IT_DOES = (
    (("PyFunc",), "runs Python code"),
    (("Rpc", "Send", "Recv", "Collective", "RemoteCall", "Nccl"), "talks to the network or other processes"),
    (("File", "Reader", "Dataset", "Summary", "Save", "Restore", "Checkpoint", "ImmutableConst", "Proto", "Iterator",
      "Record", "Queue"), "reads or writes files"),
    (("Print", "Debug"), "writes to the server's output"),
)


class UnsafeModel(Exception):
    """The SavedModel may not be served; `str()` says why, for a person, with no server path."""


def what_it_does(op: str) -> str:
    for words, meaning in _WHAT_IT_DOES:
        if any(word in op for word in words):
            return meaning
    return "is not among the computations a served model may use"


def _refuse_op(op: str, where: str = "") -> UnsafeModel:
    return UnsafeModel(f"the model uses the operation {op}{where}, which {what_it_does(op)}; {ONLY_COMPUTE}")


def check_saved_model(directory: Path, max_bytes: int = 2 << 30) -> None:
    """Raises UnsafeModel unless the SavedModel in `directory` only computes (see the docstring)."""
    from .tf_protos import load

    (saved_model_pb2,) = load("tensorflow.core.protobuf.saved_model_pb2")

    for other in _OTHER_FORMS:
        if (directory / other).exists():
            raise UnsafeModel(f"the SavedModel holds a {other}: send it as saved_model.pb only")
    path = directory / "saved_model.pb"
    if path.is_symlink() or not path.is_file():
        raise UnsafeModel("the SavedModel has no saved_model.pb file")
    if path.stat().st_size > max_bytes:
        raise UnsafeModel(f"the SavedModel's saved_model.pb is larger than {max_bytes} bytes")
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(path.read_bytes())
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: the file is not a SavedModel
        raise UnsafeModel("the SavedModel's saved_model.pb cannot be read as a SavedModel") from None
    check_proto(saved_model)


def check_proto(saved_model) -> None:
    """Raises UnsafeModel unless every meta graph of the `SavedModel` proto only computes."""
    if not saved_model.meta_graphs:
        raise UnsafeModel("the SavedModel holds no graph")
    for meta_graph in saved_model.meta_graphs:
        _MetaGraphCheck(meta_graph).run()


# ----- graphs: nodes and their inputs, for a GraphDef or a FunctionDef alike

@dataclass
class _Graph:
    nodes: dict  # name -> NodeDef
    data_inputs: dict  # name -> [source node or argument names]
    all_inputs: dict  # name -> data and control sources


def _source(ref: str) -> str:
    """The node (or function argument) an input names: `^n`, `n:1`, `n:output:0` -> `n`."""
    return ref.lstrip("^").split(":", 1)[0]


def _graph(node_defs: Iterable) -> _Graph:
    nodes, data, every = {}, {}, {}
    for node in node_defs:
        nodes[node.name] = node
        data[node.name] = [_source(ref) for ref in node.input if not ref.startswith("^")]
        every[node.name] = [_source(ref) for ref in node.input]
    return _Graph(nodes, data, every)


def _ancestors(graph: _Graph, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = [root for root in roots if root in graph.nodes]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(source for source in graph.all_inputs.get(name, ()) if source in graph.nodes)
    return seen


def _functions_named(attr) -> Iterator[str]:
    """Every function an AttrValue names (a `func`, a list of them, and those nested in them)."""
    if attr.HasField("func"):
        yield attr.func.name
        for nested in attr.func.attr.values():
            yield from _functions_named(nested)
    if attr.HasField("list"):
        for func in attr.list.func:
            yield func.name
            for nested in func.attr.values():
                yield from _functions_named(nested)


def _tensor_names(info) -> Iterator[str]:
    """The graph tensors a signature's TensorInfo names (dense, sparse or composite)."""
    if info.name:
        yield info.name
    if info.HasField("coo_sparse"):
        sparse = info.coo_sparse
        yield from (name for name in (sparse.values_tensor_name, sparse.indices_tensor_name, sparse.dense_shape_tensor_name) if name)
    if info.HasField("composite_tensor"):
        for component in info.composite_tensor.components:
            yield from _tensor_names(component)


def _safe_constant(node) -> bool:
    """A constant that may be part of a checkpoint file name: no absolute path, no `..`."""
    values = list(node.attr["value"].tensor.string_val) if "value" in node.attr else []
    return all(not value.startswith(b"/") and b".." not in value and b"\\" not in value for value in values)


def _derives_from(graph: _Graph, start: str, source: str, through: frozenset = _PATH_OPS) -> bool:
    """Whether the file name at node (or argument) `start` is made from `source` with the ops
    `through` and safe constants (see the module docstring)."""
    found, seen, stack = False, set(), [start]
    while stack:
        name = stack.pop()
        if name == source:
            found = True
            continue
        if name in seen:
            continue
        seen.add(name)
        node = graph.nodes.get(name)
        if node is None:  # another argument of the function
            return False
        if node.op == "Const":
            if not _safe_constant(node):
                return False
            continue
        if node.op not in through:
            return False
        stack.extend(graph.data_inputs[name])
    return found


class _MetaGraphCheck:
    def __init__(self, meta_graph):
        self.meta_graph = meta_graph
        self.library = {function.signature.name: function for function in meta_graph.graph_def.library.function}
        self.main = _graph(meta_graph.graph_def.node)
        saver = meta_graph.saver_def if meta_graph.HasField("saver_def") else None
        self.filename_node = _source(saver.filename_tensor_name) if saver else None
        self.save_node = _source(saver.save_tensor_name) if saver else None
        self.restore_node = _source(saver.restore_op_name) if saver else None

    def run(self) -> None:
        saver_functions = {name: kind for name, function in self.library.items()
                           if (kind := self._checkpoint_kind(function.node_def))}
        for name, function in self.library.items():
            self._check_nodes(function.node_def, saver_functions, in_function=name)
        self._check_nodes(self.meta_graph.graph_def.node, saver_functions, in_function=None)
        for name, function in self.library.items():
            if name in saver_functions:
                self._check_saver_function(function)
        self._check_entry_points(saver_functions)
        self._check_main_graph(saver_functions)

    @staticmethod
    def _checkpoint_kind(node_defs) -> str | None:
        ops = {node.op for node in node_defs}
        if ops & SAVE_OPS.keys():
            return "save"
        return "restore" if ops & RESTORE_OPS.keys() else None

    def _check_nodes(self, node_defs, saver_functions: dict, in_function: str | None) -> None:
        """Every op is allowed, a checkpoint op, or a function; every named function exists or is
        an allowed op; saver functions are called from the main graph's call nodes only."""
        for node in node_defs:
            op = node.op
            if op in self.library:
                if op in saver_functions:
                    raise _refuse_op(self._first_checkpoint_op(op), " outside the SavedModel's own saver")
            elif op not in ALLOWED_OPS and op not in CHECKPOINT_OPS:
                raise _refuse_op(op)
            for key, attr in node.attr.items():
                for name in _functions_named(attr):
                    if name in saver_functions and (in_function is not None or op not in _CALL_OPS or key != "f"):
                        raise _refuse_op(self._first_checkpoint_op(name), " outside the SavedModel's own saver")
                    if name not in self.library and name not in ALLOWED_OPS:
                        raise _refuse_op(name)

    def _first_checkpoint_op(self, function_name: str) -> str:
        return sorted(node.op for node in self.library[function_name].node_def if node.op in CHECKPOINT_OPS)[0]

    def _check_saver_function(self, function) -> None:
        """In a saver function, every checkpoint file name derives from its first argument."""
        if not function.signature.input_arg:
            raise _refuse_op(self._first_checkpoint_op(function.signature.name), " with a file name of its own")
        graph = _graph(function.node_def)
        prefix = function.signature.input_arg[0].name
        for node in function.node_def:
            self._check_file_names(graph, node, prefix)

    @staticmethod
    def _check_file_names(graph: _Graph, node, source: str | None) -> None:
        # A restore reads the loader's file name as it is; a save may add the saver's suffixes.
        through = _IDENTITY if node.op in RESTORE_OPS else _PATH_OPS
        for index in CHECKPOINT_OPS.get(node.op, ()):
            inputs = graph.data_inputs[node.name]
            if source is None or index >= len(inputs) or not _derives_from(graph, inputs[index], source, through):
                raise _refuse_op(node.op, " with a file name of its own")

    def _check_entry_points(self, saver_functions: dict) -> None:
        """What a loader may call directly (the object graph's functions, gradients) is no saver."""
        named = set(self.meta_graph.object_graph_def.concrete_functions)
        for gradient in self.meta_graph.graph_def.library.gradient:
            named |= {gradient.function_name, gradient.gradient_func}
        for name in named & saver_functions.keys():
            raise _refuse_op(self._first_checkpoint_op(name), " outside the SavedModel's own saver")

    def _check_main_graph(self, saver_functions: dict) -> None:
        """Checkpoint nodes of the main graph use the saver's file name, and only the saver's
        restore op and save tensor reach them."""
        kinds = {}  # node -> "save" / "restore", for checkpoint ops and calls of saver functions
        for name, node in self.main.nodes.items():
            if node.op in CHECKPOINT_OPS:
                kinds[name] = "save" if node.op in SAVE_OPS else "restore"
                self._check_file_names(self.main, node, self.filename_node)
            elif node.op in _CALL_OPS and node.attr["f"].func.name in saver_functions:
                kinds[name] = saver_functions[node.attr["f"].func.name]
                inputs = self.main.data_inputs[name]
                if self.filename_node is None or not inputs or not _derives_from(self.main, inputs[0], self.filename_node):
                    raise _refuse_op(self._first_checkpoint_op(node.attr["f"].func.name), " with a file name of its own")
        if not kinds:
            return
        for name in _ancestors(self.main, self._run_roots()) & kinds.keys():
            raise _refuse_op(self._op_of(name), " in what requests or init ops run")
        for name in _ancestors(self.main, [self.restore_node] if self.restore_node else []):
            if kinds.get(name) == "save":
                raise _refuse_op(self._op_of(name), " in the restore op")

    def _op_of(self, name: str) -> str:
        node = self.main.nodes[name]
        return self._first_checkpoint_op(node.attr["f"].func.name) if node.op in _CALL_OPS else node.op

    def _run_roots(self) -> set[str]:
        """Nodes that serving or loading runs besides the saver: signature tensors and the nodes
        of every collection (main op, legacy init op, table initialisers...)."""
        roots = set()
        for signature in self.meta_graph.signature_def.values():
            for tensor in [*signature.inputs.values(), *signature.outputs.values()]:
                roots.update(_source(name) for name in _tensor_names(tensor))
        for collection in self.meta_graph.collection_def.values():
            if collection.HasField("node_list"):
                roots.update(_source(value) for value in collection.node_list.value)
        return roots
