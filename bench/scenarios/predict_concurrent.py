"""`predict_concurrent`: 16 clients classifying 8 JPEGs each at the same time, through the model
service's gRPC `Classify` (16 threads, their calls multiplexed on one gRPC channel), against Keras predicting the same
images in this process in batches of 64. Goal: `studio_images_per_s / in_process_images_per_s
>= 0.9`.

Each client sends its requests one after another (`predict_images` images in all, 256: two
requests per client); `studio_images_per_s` is all the images over the time from the first
request to the last answer. The model service can join concurrent requests of one model into
one Predict call (`PREDICT_BATCH_WINDOW_MS`, off by default; `--stack-env
PREDICT_BATCH_WINDOW_MS=5` measures it on). `in_process_images_per_s` starts from decoded pixels, as `model.predict` does.
"""

from __future__ import annotations

import threading
import time

from mlstudio.common.clients import ModelClient

from .. import media
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, paired_ratio

CLIENTS = 16
IMAGES_PER_REQUEST = 8
IN_PROCESS_BATCH = 64
RATIO_GOAL = 0.9


def run(context: Context) -> dict:
    import keras

    settings = context.settings
    saved, model_id = context.served("predict")
    rounds = max(1, settings.predict_images // (CLIENTS * IMAGES_PER_REQUEST))
    total = CLIENTS * IMAGES_PER_REQUEST * rounds
    images, pixels = media.photos(total, saved.size)
    model = keras.models.load_model(saved.model_file, compile=False)
    clients = [ModelClient(context.stack.grpc_address("model")) for _ in range(CLIENTS)]
    user_id = context.account.user_id

    def in_process() -> None:
        model.predict(pixels, batch_size=IN_PROCESS_BATCH, verbose=0)

    def studio() -> None:
        start = threading.Barrier(CLIENTS)
        failures: list[BaseException] = []

        def client_work(index: int) -> None:
            try:
                start.wait()
                for request in range(rounds):
                    first = (request * CLIENTS + index) * IMAGES_PER_REQUEST
                    answers = clients[index].classify(model_id, user_id, images[first:first + IMAGES_PER_REQUEST])
                    if len(answers) != IMAGES_PER_REQUEST:
                        raise RuntimeError(f"Classify answered {len(answers)} results for {IMAGES_PER_REQUEST} images")
            except BaseException as exc:  # noqa: BLE001 - reported after the run
                failures.append(exc)

        threads = [threading.Thread(target=client_work, args=(index,)) for index in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError(f"{len(failures)} of {CLIENTS} clients failed: {failures[0]}")

    in_process(), studio()  # warm-up: Keras traces its function, the connections open
    local, served, meters = Runs(), Runs(), []
    for _ in range(settings.repeats):
        local.time(in_process)
        with CpuMeter(context.stack.pids()) as cpu:
            served.time(studio)
        meters.append(cpu)
    ratio = paired_ratio(local.seconds, served.seconds)  # images/s studio over in-process: same count
    goals = [goal(f"studio_images_per_s / in_process_images_per_s >= {RATIO_GOAL:g}", ratio, RATIO_GOAL, at_least=True)]
    return {
        "images": total,
        "clients": CLIENTS,
        "images_per_request": IMAGES_PER_REQUEST,
        "studio_images_per_s": total / served.median,
        "in_process_images_per_s": total / local.median,
        "studio_s": served.median,
        "in_process_s": local.median,
        "studio_over_in_process": ratio,
        "studio_cpu_s": mean_cpu(meters),
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"studio_s": served.rounded(), "in_process_s": local.rounded()},
    }
