"""Batching across requests (`batching.PredictBatcher`) over a fake Predict: concurrent calls of
one model with inputs of one shape share a call and each gets its own rows; anything else goes
alone. Threads meet through events, never through timing: a batch that fills is sent at once,
so the tests give windows far longer than they wait."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mlstudio.common import errors
from mlstudio.common.deadlines import Deadline
from model_service.batching import PredictBatcher

LONG_WINDOW_S = 60.0  # a batch that fills does not wait for it
JOIN_S = 30.0


class FakePredict:
    """Doubles each image's pixel sum; records each call's batch size."""

    def __init__(self, fail=None, rows_out=None):
        self.calls: list[int] = []
        self.fail = fail
        self.rows_out = rows_out
        self.lock = threading.Lock()

    def __call__(self, name, version, inputs, output_keys=None, deadline=None):
        images = inputs["images"]
        with self.lock:
            self.calls.append(len(images))
        if self.fail:
            raise self.fail
        scores = images.reshape(len(images), -1).sum(axis=1).astype(np.float32) * 2
        if self.rows_out is not None:
            return {"probabilities": np.zeros((self.rows_out, 2), np.float32)}
        return {"probabilities": np.stack([scores, -scores], axis=1)}


def images(count: int, start: int, size=(2, 2, 3)) -> np.ndarray:
    return np.stack([np.full(size, start + n, np.uint8) for n in range(count)])


def expected(batch: np.ndarray) -> np.ndarray:
    scores = batch.reshape(len(batch), -1).sum(axis=1).astype(np.float32) * 2
    return np.stack([scores, -scores], axis=1)


def concurrently(calls):
    """Runs each callable in its own thread; their results (or exceptions), in order."""
    results = [None] * len(calls)

    def run(index, call):
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_S)
    assert not any(thread.is_alive() for thread in threads), "a batched prediction never came back"
    return results


def test_concurrent_requests_of_one_model_share_one_call_and_get_their_own_rows():
    predict = FakePredict()
    batcher = PredictBatcher(predict, window_s=LONG_WINDOW_S, max_rows=8)
    inputs = [images(2, 10 * n) for n in range(4)]
    results = concurrently([lambda batch=batch: batcher.predict("m", 1, {"images": batch}, ["probabilities"])
                            for batch in inputs])
    assert predict.calls == [8]
    for batch, result in zip(inputs, results):
        np.testing.assert_array_equal(result["probabilities"], expected(batch))


def test_other_shapes_other_models_and_big_requests_go_alone():
    predict = FakePredict()
    batcher = PredictBatcher(predict, window_s=0.0, max_rows=8)
    assert batcher.predict("m", 1, {"images": images(3, 0)}, ["probabilities"])["probabilities"].shape == (3, 2)
    assert predict.calls == [3]  # a window of 0: at once
    windowed = PredictBatcher(predict, window_s=LONG_WINDOW_S, max_rows=8)
    big = windowed.predict("m", 1, {"images": images(8, 0)}, ["probabilities"])  # fills a batch alone: no wait
    np.testing.assert_array_equal(big["probabilities"], expected(images(8, 0)))
    # Different shapes, or different models, never share a call (each fills its own batch of 4).
    shared = PredictBatcher(predict, window_s=LONG_WINDOW_S, max_rows=4)
    calls = [lambda: shared.predict("m", 1, {"images": images(4, 0, (2, 2, 3))}, ["probabilities"]),
             lambda: shared.predict("m", 1, {"images": images(4, 0, (3, 3, 3))}, ["probabilities"]),
             lambda: shared.predict("other", 1, {"images": images(4, 0)}, ["probabilities"])]
    assert all(isinstance(result, dict) for result in concurrently(calls))
    assert predict.calls == [3, 8, 4, 4, 4]


def test_a_failed_call_fails_every_member():
    predict = FakePredict(fail=errors.Unavailable("TensorFlow Serving is not reachable"))
    batcher = PredictBatcher(predict, window_s=LONG_WINDOW_S, max_rows=4)
    results = concurrently([lambda: batcher.predict("m", 1, {"images": images(2, 0)}, ["probabilities"])] * 2)
    assert predict.calls == [4]
    assert all(isinstance(result, errors.Unavailable) for result in results)


def test_outputs_that_are_not_one_row_per_image_are_asked_again_request_by_request():
    predict = FakePredict(rows_out=1)
    batcher = PredictBatcher(predict, window_s=LONG_WINDOW_S, max_rows=4)
    results = concurrently([lambda: batcher.predict("m", 1, {"images": images(2, 0)}, ["probabilities"])] * 2)
    assert predict.calls == [4, 2, 2]
    assert all(result["probabilities"].shape == (1, 2) for result in results)


def test_a_member_whose_caller_left_stops_waiting_while_the_batch_goes_on():
    release = threading.Event()

    class Slow(FakePredict):
        def __call__(self, *args, **kwargs):
            assert release.wait(JOIN_S)
            return super().__call__(*args, **kwargs)

    predict = Slow()
    batcher = PredictBatcher(predict, window_s=LONG_WINDOW_S, max_rows=4)
    gone = threading.Event()
    impatient = Deadline(None, gone=gone.is_set)
    results = []

    def patient():
        results.append(batcher.predict("m", 1, {"images": images(2, 0)}, ["probabilities"]))

    leader = threading.Thread(target=patient)
    leader.start()
    opened = threading.Event()
    for _ in range(int(JOIN_S / 0.01)):  # the patient call opens the batch first
        if batcher._open:
            opened.set()
            break
        opened.wait(0.01)
    assert opened.is_set()
    follower_error = []

    def follower():
        try:
            batcher.predict("m", 1, {"images": images(2, 5)}, ["probabilities"], deadline=impatient)
        except errors.DeadlineExceeded as exc:
            follower_error.append(exc)

    waiting = threading.Thread(target=follower)
    waiting.start()
    gone.set()  # its client hung up while the batch (full: sent) is being computed
    waiting.join(JOIN_S)
    assert follower_error and "the client disconnected" in follower_error[0].message
    release.set()
    leader.join(JOIN_S)
    assert predict.calls == [4] and results[0]["probabilities"].shape == (2, 2)


def test_settings_are_checked():
    with pytest.raises(ValueError):
        PredictBatcher(FakePredict(), window_s=-1, max_rows=8)
