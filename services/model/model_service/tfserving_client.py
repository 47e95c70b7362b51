"""gRPC client of TensorFlow Serving (tensorflow-serving-api): reload the model config, watch a
model version's state, predict, and read a model's signatures.

Every call carries a deadline. TF Serving being down or too slow becomes `Unavailable` (503),
never a hang; its other failures become domain errors that say what happened.

The long deadlines (a Predict, a config reload) are for work on a connection that is up. When the
channel is not READY (TF Serving stopped, restarting, or hanging before the HTTP/2 handshake), a
call first waits at most `connect_wait_s` for it, then answers 503 "TensorFlow Serving is not
reachable" at once, instead of spending the whole inference deadline waiting for a connection.
"""
from __future__ import annotations

import logging
import time

import grpc
from tensorflow_serving.config import model_server_config_pb2

from mlstudio.common import errors
from mlstudio.common.deadlines import NONE, Deadline
from mlstudio.common.lazy import lazy_module

from . import tensors
from .tf_protos import load

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

# TF Serving's API messages import TensorFlow's; loaded without the rest of TensorFlow.
(get_model_metadata_pb2, get_model_status_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
 prediction_service_pb2_grpc) = load(*(f"tensorflow_serving.apis.{name}" for name in (
     "get_model_metadata_pb2", "get_model_status_pb2", "model_management_pb2", "model_service_pb2_grpc", "predict_pb2",
     "prediction_service_pb2_grpc")))

log = logging.getLogger(__name__)
SIGNATURE = "serving_default"
_STATE = get_model_status_pb2.ModelVersionStatus.State
_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ModelLoadFailed(errors.Unprocessable):
    """TF Serving tried to load a model version and gave up (422: the model is unusable)."""


UNREACHABLE = "TensorFlow Serving is not reachable"


class TFServingClient:
    def __init__(self, address: str, *, predict_deadline_s: float = 30.0, control_deadline_s: float = 10.0, reload_deadline_s: float = 120.0,
                 connect_wait_s: float = 3.0, max_message_mb: int = 256):
        self.address = address
        self.predict_deadline_s = predict_deadline_s
        self.control_deadline_s = control_deadline_s
        self.connect_wait_s = connect_wait_s
        # TF Serving answers a reload once the configured models are loaded (or failed).
        self.reload_deadline_s = reload_deadline_s
        options = [
            ("grpc.max_receive_message_length", max_message_mb << 20),
            ("grpc.max_send_message_length", max_message_mb << 20),
            # Reconnect quickly once a restarted TF Serving listens again.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self.channel = grpc.insecure_channel(address, options=options)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._connectivity = grpc.ChannelConnectivity.IDLE
        self.channel.subscribe(self._track, try_to_connect=True)

    def _track(self, connectivity: grpc.ChannelConnectivity) -> None:
        self._connectivity = connectivity

    def _require_ready(self, deadline: Deadline = NONE) -> None:
        """Returns at once on a READY channel; otherwise waits at most `connect_wait_s` (and the
        caller's deadline) for TF Serving to accept a connection, then raises Unavailable."""
        if self._connectivity == grpc.ChannelConnectivity.READY:
            return
        ready = grpc.channel_ready_future(self.channel)  # also asks an idle channel to connect
        try:
            ready.result(timeout=deadline.timeout(self.connect_wait_s))
        except grpc.FutureTimeoutError:
            raise errors.Unavailable(f"{UNREACHABLE} (no connection within {self.connect_wait_s:g} s); try again shortly",
                                     code="tfserving_unreachable") from None
        finally:
            ready.cancel()

    def _error(self, exc: grpc.RpcError, doing: str) -> errors.DomainError:
        if exc.code() in _DOWN:
            # The details name the address (a socket path, in the local stack): for the log only.
            log.warning("TensorFlow Serving at %s failed while %s: %s", self.address, doing, exc.details() or exc.code().name)
            why = "it did not answer in time" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "it cannot be reached"
            return errors.Unavailable(f"TensorFlow Serving is unavailable ({doing}): {why}; try again shortly")
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return errors.Unavailable(f"TensorFlow Serving does not hold the model yet ({doing}); try again shortly", code="model_not_loaded")
        if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            return errors.Unprocessable(f"the model could not run ({doing}): {exc.details()}", code="prediction_failed")
        return errors.DomainError(f"TensorFlow Serving failed ({doing}): {exc.code().name} {exc.details()}")

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Applies `config` (HandleReloadConfigRequest). TF Serving answers once every configured
        model is loaded, or with an error naming those that could not be."""
        request = model_management_pb2.ReloadConfigRequest(config=config)
        self._require_ready()
        try:
            response = self.models.HandleReloadConfigRequest(request, timeout=self.reload_deadline_s)
        except grpc.RpcError as exc:
            raise self._error(exc, "reloading the model config") from None
        if response.status.error_code:
            raise ModelLoadFailed(f"TensorFlow Serving could not apply the model config: {response.status.error_message}", code="model_load_failed")

    def version_state(self, name: str, version: int) -> tuple[str, str]:
        """(state, error message) of `name`/`version`: START, LOADING, AVAILABLE, UNLOADING,
        END or UNKNOWN (TF Serving does not know it)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        request.model_spec.version.value = version
        self._require_ready()
        try:
            response = self.models.GetModelStatus(request, timeout=self.control_deadline_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "UNKNOWN", ""
            raise self._error(exc, f"reading the state of {name}") from None
        for status in response.model_version_status:
            if status.version == version:
                return _STATE.Name(status.state), status.status.error_message
        return "UNKNOWN", ""

    def wait_available(self, name: str, version: int, timeout_s: float, poll_s: float = 0.2) -> None:
        """Returns once `name`/`version` is AVAILABLE; ModelLoadFailed when TF Serving gave up
        on it, Unavailable when it takes longer than `timeout_s`."""
        give_up = time.monotonic() + timeout_s
        while True:
            state, message = self.version_state(name, version)
            if state == "AVAILABLE":
                return
            if state == "END" and message:
                raise ModelLoadFailed(f"TensorFlow Serving could not load the model: {message}", code="model_load_failed")
            if time.monotonic() >= give_up:
                raise errors.Unavailable(f"TensorFlow Serving did not make {name} version {version} available within {timeout_s:.0f} s (state {state})")
            time.sleep(poll_s)

    def predict(self, name: str, version: int, inputs: dict[str, np.ndarray], output_keys: list[str] | None = None,
                deadline: Deadline = NONE) -> dict[str, np.ndarray]:
        """One Predict call on the `serving_default` signature of `name`/`version`, within
        `predict_deadline_s` and the caller's `deadline`."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.version.value = version
        request.model_spec.signature_name = SIGNATURE
        for key, array in inputs.items():
            request.inputs[key].CopyFrom(tensors.to_proto(array))
        request.output_filter.extend(output_keys or [])
        self._require_ready(deadline)
        deadline.check(f"predicting with {name}")
        try:
            response = self.predictions.Predict(request, timeout=deadline.timeout(self.predict_deadline_s))
        except grpc.RpcError as exc:
            deadline.check(f"TensorFlow Serving answered {name}'s prediction")  # the caller's deadline, not TF Serving's fault
            raise self._error(exc, f"predicting with {name}") from None
        return {key: tensors.from_proto(value) for key, value in response.outputs.items()}

    def signatures(self, name: str, version: int):
        """The model's SignatureDefMap (GetModelMetadata), keyed by signature name."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        request.model_spec.version.value = version
        self._require_ready()
        try:
            response = self.predictions.GetModelMetadata(request, timeout=self.control_deadline_s)
        except grpc.RpcError as exc:
            raise self._error(exc, f"reading the signatures of {name}") from None
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map.signature_def

    def ping(self, timeout_s: float = 2.0) -> bool:
        """True when TF Serving answers at all (any status but unavailable)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "readiness-probe"
        try:
            self.models.GetModelStatus(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code() not in _DOWN
        return True
