"""`python -m tfserving_standin --port 8500 --model_config_file <file>`: runs the TF Serving
stand-in with the real `tensorflow_model_server`'s flag names (the subset that makes sense)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

# Modules `import tensorflow` pulls in that serving a SavedModel never uses: Keras (with OpenCV,
# Matplotlib, Pillow and optree behind it, about 64 MB resident) and h5py (Keras' HDF5 files, about
# 10 MB). `tf.saved_model.load` revives any SavedModel, Keras-exported ones included, from its
# graph and variables alone; TensorFlow imports both modules optionally and goes on without them.
NOT_NEEDED = ("keras", "h5py")


def skip_unneeded_imports() -> None:
    """Makes `import keras` and `import h5py` fail in this process (a None entry in sys.modules
    reads as "not installed"); must run before anything imports TensorFlow."""
    for name in NOT_NEEDED:
        sys.modules.setdefault(name, None)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tfserving_standin", description="Local stand-in for TensorFlow Serving's gRPC API.")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--grpc_host", default="127.0.0.1", help="address to bind (the real server binds 0.0.0.0)")
    parser.add_argument("--grpc_socket_path", default="", help="also serve gRPC on this unix socket")
    parser.add_argument("--model_config_file", default="", help="text-format ModelServerConfig")
    parser.add_argument("--model_name", default="", help="serve one model (instead of a config file)")
    parser.add_argument("--model_base_path", default="", help="base path of --model_name")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0, help="how often to look for new versions; 0: never")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0, help="how often to re-read the config file; 0: never")
    parser.add_argument("--max_num_load_retries", type=int, default=5, help="load attempts after the first failure")
    parser.add_argument("--load_retry_interval_micros", type=int, default=60_000_000, help="pause between load attempts")
    parser.add_argument("--rest_api_port", type=int, default=0, help="not supported by the stand-in; must be 0")
    parser.add_argument("--grpc_max_threads", type=int, default=16)
    args = parser.parse_args(argv)
    if args.rest_api_port:
        parser.error("the stand-in has no REST API; use the gRPC port")
    if bool(args.model_config_file) == bool(args.model_name):
        parser.error("give either --model_config_file or --model_name with --model_base_path")
    return args


def initial_config(args):
    from tensorflow_serving.config import model_server_config_pb2

    from .manager import read_config_file

    if args.model_config_file:
        return read_config_file(Path(args.model_config_file))
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = args.model_name, str(Path(args.model_base_path).resolve()), "tensorflow"
    return config


def poll(period_s: float, stop: threading.Event, work) -> None:
    while not stop.wait(period_s):
        try:
            work()
        except Exception:  # noqa: BLE001 - keep polling; the failure is logged
            logging.getLogger(__name__).exception("poll failed")


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    skip_unneeded_imports()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tfserving-standin %(levelname)s %(message)s")
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    from .manager import ModelManager, read_config_file
    from .servicer import ModelServicer, PredictionServicer

    manager = ModelManager(max_load_retries=args.max_num_load_retries, load_retry_interval_s=args.load_retry_interval_micros / 1e6)
    manager.apply(initial_config(args))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.grpc_max_threads), options=[
        ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    if server.add_insecure_port(f"{args.grpc_host}:{args.port}") == 0:
        raise SystemExit(f"cannot listen on {args.grpc_host}:{args.port}")
    if args.grpc_socket_path and server.add_insecure_port(f"unix:{args.grpc_socket_path}") == 0:
        raise SystemExit(f"cannot listen on unix:{args.grpc_socket_path}")
    stop = threading.Event()
    pollers = []
    if args.file_system_poll_wait_seconds > 0:
        pollers.append(threading.Thread(target=poll, args=(args.file_system_poll_wait_seconds, stop, manager.sync), daemon=True))
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        reread = lambda: manager.apply(read_config_file(Path(args.model_config_file)))  # noqa: E731
        pollers.append(threading.Thread(target=poll, args=(args.model_config_file_poll_wait_seconds, stop, reread), daemon=True))
    server.start()
    for thread in pollers:
        thread.start()
    logging.info("TF Serving stand-in listening on %s:%s%s", args.grpc_host, args.port,
                 f" and unix:{args.grpc_socket_path}" if args.grpc_socket_path else "")

    def shut_down(_signum, _frame):
        stop.set()
        server.stop(2)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
