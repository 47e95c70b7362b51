"""The SavedModel graph check (`graph_safety`): real models pass (the exported sample models, the
training recipe's model, an OD API style detector, image decoding/resizing/NMS inside a
signature, a TF1 graph with its saver), and each kind of op that reaches outside the model is
refused by name, wherever it hides: the graph, any library function, a function named by an
attribute, a checkpoint op out of the saver's place or with a file name of its own."""
from __future__ import annotations

import shutil

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from model_service import exporter, graph_safety, sample_models, uploads
from model_service.training import recipe

IMAGE = tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")


def write(directory, function, module=None):
    module = module or tf.Module()
    module.f = function
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.f})
    return directory


def refusal(directory) -> str:
    with pytest.raises(graph_safety.UnsafeModel) as caught:
        graph_safety.check_saved_model(directory)
    return str(caught.value)


def load_proto(directory) -> saved_model_pb2.SavedModel:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
    return saved_model


def refusal_of_proto(saved_model) -> str:
    with pytest.raises(graph_safety.UnsafeModel) as caught:
        graph_safety.check_proto(saved_model)
    return str(caught.value)


# ----- real models pass

@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    directory = tmp_path_factory.mktemp("samples")
    sample_models.write_samples(directory)
    return directory


@pytest.mark.parametrize("name, fmt, model_type", [
    ("light_dark.h5", uploads.H5, "Classification"),
    ("light_dark.keras", uploads.KERAS, "Classification"),
    ("detector.zip", uploads.SAVED_MODEL_ZIP, "Detection"),
])
def test_the_exported_sample_models_pass(samples, tmp_path, name, fmt, model_type):
    shutil.copyfile(samples / name, tmp_path / name)
    exporter.export(tmp_path / name, fmt, model_type, "raw", 64, tmp_path / "out", tmp_path, 1 << 30)
    graph_safety.check_saved_model(tmp_path / "out")


def test_a_keras_exported_saved_model_passes(tmp_path):
    sample_models.light_dark_model().export(str(tmp_path / "exported"))  # Keras' own SavedModel export
    graph_safety.check_saved_model(tmp_path / "exported")


def test_the_od_api_style_detector_passes(samples):
    graph_safety.check_saved_model(samples / "detector_saved_model")


def test_the_training_recipes_model_passes_once_exported(tmp_path):
    recipe.build_model(32, 3, 0.001).save(tmp_path / "model.keras")
    exporter.export(tmp_path / "model.keras", uploads.KERAS, "Classification", "raw", 64, tmp_path / "out", tmp_path, 1 << 30)
    graph_safety.check_saved_model(tmp_path / "out")


def test_image_decoding_resizing_and_nms_inside_a_signature_pass(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def detect(encoded):
        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return tf.image.resize(tf.cast(image, tf.float32), (32, 32))
        images = tf.map_fn(one, encoded, fn_output_signature=tf.float32)
        boxes, scores = tf.random.uniform([10, 4]), tf.random.uniform([10])
        kept = tf.image.non_max_suppression(boxes, scores, 5)
        combined = tf.image.combined_non_max_suppression(boxes[None, :, None, :], scores[None, :, None], 5, 5)
        return {"mean": tf.reduce_mean(images), "scores": tf.gather(scores, kept), "boxes": combined.nmsed_boxes}

    graph_safety.check_saved_model(write(tmp_path / "m", detect))


def tf1_saved_model(directory, main_op=None, outputs=None):
    """A TF1-style SavedModel (variables, `save/...` saver nodes in the graph, a main op)."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        weight = tf.compat.v1.get_variable("w", initializer=tf.constant(2.0))
        scores = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) * weight
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(directory))
            signature = tf.compat.v1.saved_model.predict_signature_def({"inputs": images}, outputs or {"scores": scores})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                                 main_op=main_op() if main_op else tf.compat.v1.tables_initializer())
            builder.save()
    return directory


def test_a_tf1_graph_with_its_saver_passes(tmp_path):
    graph_safety.check_saved_model(tf1_saved_model(tmp_path / "tf1"))


# ----- each kind of side effect is refused, by name

@pytest.mark.parametrize("body, op, meaning", [
    (lambda: tf.io.read_file("/etc/hostname"), "ReadFile", "reads or writes files"),
    (lambda: tf.io.write_file("/tmp/written-by-a-model", "x"), "WriteFile", "reads or writes files"),
    (lambda: tf.io.matching_files("/etc/*"), "MatchingFiles", "reads or writes files"),
    (lambda: tf.print("x", output_stream="file:///tmp/printed-by-a-model"), "PrintV2", "writes to the server's output"),
    (lambda: tf.raw_ops.ImmutableConst(dtype=tf.float32, shape=[1], memory_region_name="/etc/hostname"),
     "ImmutableConst", "reads or writes files"),
    (lambda: tf.raw_ops.SaveV2(prefix="/tmp/model-ckpt", tensor_names=["a"], shape_and_slices=[""], tensors=[tf.zeros([1])]),
     "SaveV2", "reads or writes files"),
])
def test_file_and_output_ops_in_a_signature_are_refused(tmp_path, body, op, meaning):
    @tf.function(input_signature=[IMAGE])
    def serve(images):
        with tf.control_dependencies([body()]):
            return {"scores": tf.cast(tf.reduce_mean(images), tf.float32)[None, None]}

    message = refusal(write(tmp_path / "m", serve))
    assert f"the operation {op}" in message and meaning in message and message.endswith("models may only compute")


def test_a_table_read_from_a_text_file_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        str(tmp_path / "vocab.txt"), tf.string, 0, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(words):
        return {"ids": module.table.lookup(words)}

    assert "InitializeTableFromTextFileV2" in refusal(write(tmp_path / "m", serve, module))


def test_python_network_and_unknown_ops_are_refused():
    for op, meaning in [("EagerPyFunc", "runs Python code"), ("RpcCall", "talks to the network"),
                        ("_Send", "talks to the network"), ("SomethingNew", "not among the computations")]:
        saved_model = saved_model_pb2.SavedModel()
        graph = saved_model.meta_graphs.add().graph_def
        graph.node.add(name="x", op="Placeholder")
        graph.node.add(name="y", op=op, input=["x"])
        assert f"the operation {op}, which" in refusal_of_proto(saved_model) and meaning in refusal_of_proto(saved_model)


def test_every_function_of_the_library_is_checked_even_unreachable_ones():
    saved_model = saved_model_pb2.SavedModel()
    meta_graph = saved_model.meta_graphs.add()
    meta_graph.graph_def.node.add(name="x", op="Placeholder")
    unused = meta_graph.graph_def.library.function.add()
    unused.signature.name = "__inference_never_called_1"
    unused.node_def.add(name="read", op="ReadFile")
    assert "ReadFile" in refusal_of_proto(saved_model)


def test_a_function_name_that_is_an_op_is_refused():
    # A call of a name missing from the library runs the op of that name.
    saved_model = saved_model_pb2.SavedModel()
    graph = saved_model.meta_graphs.add().graph_def
    graph.node.add(name="x", op="Placeholder")
    call = graph.node.add(name="call", op="PartitionedCall", input=["x"])
    call.attr["f"].func.name = "WriteFile"
    assert "WriteFile" in refusal_of_proto(saved_model)
    call.attr["f"].func.name = "Identity"
    graph_safety.check_proto(saved_model)
    nested = call.attr["f"].func.attr["inner"]
    nested.list.func.add(name="ReadFile")
    assert "ReadFile" in refusal_of_proto(saved_model)


# ----- checkpoint ops: only in the saver, with the loader's file name

def saved_function(tmp_path):
    module = tf.Module()
    module.weight = tf.Variable(2.0)

    @tf.function(input_signature=[IMAGE])
    def serve(images):
        return {"scores": (tf.cast(tf.reduce_mean(images), tf.float32) * module.weight)[None, None]}

    return load_proto(write(tmp_path / "m", serve, module))


def saver_functions(saved_model):
    meta_graph = saved_model.meta_graphs[0]
    return {kind: next(f for f in meta_graph.graph_def.library.function if f"_traced_{kind}" in f.signature.name)
            for kind in ("save", "restore")}


def test_the_savers_own_functions_pass(tmp_path):
    graph_safety.check_proto(saved_function(tmp_path))


def test_a_serving_function_calling_the_saver_is_refused(tmp_path):
    saved_model = saved_function(tmp_path)
    save = saver_functions(saved_model)["save"]
    serving = next(f for f in saved_model.meta_graphs[0].graph_def.library.function if "_serve_" in f.signature.name)
    call = serving.node_def.add(name="sneaky", op="StatefulPartitionedCall")
    call.attr["f"].func.name = save.signature.name
    assert "the operation MergeV2Checkpoints outside the SavedModel's own saver" in refusal_of_proto(saved_model)


def test_a_saver_file_name_that_leaves_the_variables_folder_is_refused(tmp_path):
    saved_model = saved_function(tmp_path)
    restore = saver_functions(saved_model)["restore"]
    suffix = restore.node_def.add(name="up", op="Const")
    suffix.attr["value"].tensor.dtype = tf.string.as_datatype_enum
    suffix.attr["value"].tensor.string_val.append(b"/../../../etc/secret")
    restore.node_def.add(name="joined", op="StringJoin", input=["file_prefix", "up:output:0"])
    node = next(n for n in restore.node_def if n.op == "RestoreV2")
    node.input[0] = "joined:output:0"
    assert "the operation RestoreV2 with a file name of its own" in refusal_of_proto(saved_model)


def test_a_saver_call_fed_a_constant_file_name_is_refused(tmp_path):
    saved_model = saved_function(tmp_path)
    graph = saved_model.meta_graphs[0].graph_def
    constant = graph.node.add(name="elsewhere", op="Const")
    constant.attr["value"].tensor.string_val.append(b"/tmp/elsewhere")
    restore_node = next(n for n in graph.node if n.name == saved_model.meta_graphs[0].saver_def.restore_op_name)
    restore_node.input[0] = "elsewhere"
    assert "with a file name of its own" in refusal_of_proto(saved_model)


def test_tf1_saver_nodes_reached_by_a_signature_or_init_op_are_refused(tmp_path):
    saved_model = load_proto(tf1_saved_model(tmp_path / "tf1"))
    meta_graph = saved_model.meta_graphs[0]
    meta_graph.signature_def["serving_default"].outputs["saved"].name = "save/control_dependency:0"
    assert "the operation SaveV2 in what requests or init ops run" in refusal_of_proto(saved_model)

    saved_model = load_proto(tmp_path / "tf1")
    meta_graph = saved_model.meta_graphs[0]
    restore_all = next(n for n in meta_graph.graph_def.node if n.name == "save/restore_all")
    restore_all.input.append("^save/SaveV2")
    assert "the operation SaveV2 in the restore op" in refusal_of_proto(saved_model)

    saved_model = load_proto(tmp_path / "tf1")
    meta_graph = saved_model.meta_graphs[0]
    meta_graph.collection_def["saved_model_main_op"].node_list.value.append("save/RestoreV2")
    assert "RestoreV2 in what requests or init ops run" in refusal_of_proto(saved_model)


def test_a_tf1_init_op_that_writes_is_refused(tmp_path):
    directory = tf1_saved_model(tmp_path / "tf1", main_op=lambda: tf.io.write_file(str(tmp_path / "written"), "x"))
    assert "WriteFile" in refusal(directory) and not (tmp_path / "written").exists()


# ----- the file itself

def test_other_forms_and_unreadable_files_are_refused(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff not a proto")
    assert "cannot be read as a SavedModel" in refusal(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert "holds no graph" in refusal(tmp_path)
    (tmp_path / "saved_model.pbtxt").write_text("meta_graphs {}")
    assert "saved_model.pbtxt" in refusal(tmp_path)
    assert "no saved_model.pb" in refusal(tmp_path / "nothing-here")
