"""The stand-in's gRPC servicers: TF Serving's PredictionService and ModelService, the subset the
model service uses, answering with the same messages and status codes as the real server."""
from __future__ import annotations

import logging

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from .manager import ConfigError, ModelManager, ServableNotFound

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
# tensorflow.error.Code values of StatusProto.error_code
_ERROR_CODE_UNKNOWN = 2
_ERROR_CODE_INVALID_ARGUMENT = 3


def _requested(spec) -> tuple[int | None, str]:
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else ""
    return version, label


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def _servable(self, spec, context):
        version, label = _requested(spec)
        try:
            return self.manager.servable(spec.name, version, label)
        except ServableNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    def Predict(self, request, context):
        servable = self._servable(request.model_spec, context)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        function = servable.signatures.get(signature_name)
        if function is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature key \"{signature_name}\" not found.")
        expected = set(function.structured_input_signature[1])
        given = set(request.inputs)
        if given != expected:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input keys {sorted(given)} do not match the signature's {sorted(expected)}")
        wanted = list(request.output_filter) or list(function.structured_outputs)
        unknown = [key for key in wanted if key not in function.structured_outputs]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found in signature: {unknown}")
        try:
            inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
            outputs = function(**inputs)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc).splitlines()[0][:1000])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for key in wanted:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
        return response

    def GetModelMetadata(self, request, context):
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field must be exactly signature_def")
        servable = self._servable(request.model_spec, context)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):
        version, _label = _requested(request.model_spec)
        try:
            found = self.manager.statuses(request.model_spec.name, version)
        except ServableNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in found:
            entry = response.model_version_status.add(version=number, state=status.state)
            if status.error:
                entry.status.error_code = _ERROR_CODE_UNKNOWN
                entry.status.error_message = status.error
        return response

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.manager.apply(request.config)
        except ConfigError as exc:
            response.status.error_code = _ERROR_CODE_INVALID_ARGUMENT
            response.status.error_message = str(exc)
            return response
        failed = self.manager.failed_models()
        if failed:
            response.status.error_code = _ERROR_CODE_UNKNOWN
            response.status.error_message = "Some models did not become available: {" + ", ".join(failed) + "}"
        return response
