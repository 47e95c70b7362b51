"""`predict`: 256 JPEGs of 224x224 classified by a small CNN, in batches of 64, by Keras in this
process and by the model service's gRPC `Classify` through TF Serving (the stand-in locally).
Goal: in_process_s / studio_s >= 0.8.

Both sides are warmed up with one batch first (Keras traces its function on the first call;
the studio's model stays loaded), so the figures are steady-state serving, which is what a user
waiting for predictions sees. `in_process_s` starts from decoded pixels, as `model.predict` does;
the studio receives the JPEGs and decodes them itself, so `in_process_with_decode_s` is given too.
"""

from __future__ import annotations

import numpy as np
from mlstudio.common.clients import ModelClient

from .. import media
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, paired_ratio

EFFICIENCY_GOAL = 0.8


def run(context: Context) -> dict:
    import cv2
    import keras

    settings = context.settings
    saved, model_id = context.served("predict")
    images, pixels = media.photos(settings.predict_images, saved.size)
    batches = [
        images[start : start + settings.predict_batch] for start in range(0, len(images), settings.predict_batch)
    ]
    model = keras.models.load_model(saved.model_file, compile=False)
    client = ModelClient(context.stack.grpc_address("model"))
    user_id = context.account.user_id

    def in_process() -> np.ndarray:
        return model.predict(pixels, batch_size=settings.predict_batch, verbose=0)

    def in_process_with_decode() -> np.ndarray:
        decoded = np.stack(
            [
                cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                for jpeg in images
            ]
        )
        return model.predict(decoded, batch_size=settings.predict_batch, verbose=0)

    def studio() -> list[str]:
        return [result.label for batch in batches for result in client.classify(model_id, user_id, batch)]

    in_process(), studio()  # warm-up
    local, local_decoding, served = Runs(), Runs(), Runs()
    meters: list[CpuMeter] = []
    for _ in range(settings.repeats):
        scores = local.time(in_process)
        local_decoding.time(in_process_with_decode)
        with CpuMeter(context.stack.pids()) as cpu:
            labels = served.time(studio)
        meters.append(cpu)
    agreement = float(
        np.mean(
            [saved.labels[int(best)] == label for best, label in zip(np.argmax(scores, axis=1), labels, strict=True)]
        )
    )
    efficiency = paired_ratio(local.seconds, served.seconds)
    goals = [goal(f"in_process_s / studio_s >= {EFFICIENCY_GOAL:g}", efficiency, EFFICIENCY_GOAL, at_least=True)]
    return {
        "images": len(images),
        "image_size": saved.size,
        "batch": settings.predict_batch,
        "jpeg_bytes": sum(len(jpeg) for jpeg in images),
        "in_process_s": local.median,
        "in_process_with_decode_s": local_decoding.median,
        "studio_s": served.median,
        "studio_cpu_s": mean_cpu(meters),
        "in_process_over_studio": efficiency,
        "top1_agreement": agreement,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {
            "in_process_s": local.rounded(),
            "in_process_with_decode_s": local_decoding.rounded(),
            "studio_s": served.rounded(),
        },
    }
