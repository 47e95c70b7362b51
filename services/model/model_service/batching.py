"""Batching across requests: concurrent predictions of one model become one Predict call.

TF Serving computes a batch of 64 images in little more time than a batch of 8, so 16 clients
sending 8 images each are served much faster together than one after another. As TF Serving's
own batching does, the first request for a model opens a batch and waits a short window
(`PREDICT_BATCH_WINDOW_MS`) for others; those that arrive meanwhile with inputs of the same shape
join it, until it holds `max_rows` images, which sends it at once. The batch's inputs are joined
along their first dimension, sent as one call, and each request gets its rows of every output.

A request that holds `max_rows` images or more, or a window of 0, goes alone and at once. The
joint call lasts as long as the longest-waiting member's deadline allows and stops when every
member has gone; a member whose own deadline passes stops waiting (DeadlineExceeded) while the
others are answered. When the call fails, every member gets the error. A model whose outputs
are not one row per image (they could not be split) is asked again, request by request.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mlstudio.common.deadlines import NONE, Deadline
from mlstudio.common.lazy import lazy_module

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

Predict = Callable[..., "dict[str, np.ndarray]"]  # a string: np is only imported when used
WAIT_STEP_S = 0.05  # how often a waiting member looks at its own deadline


@dataclass
class _Member:
    inputs: dict[str, np.ndarray]
    rows: int
    deadline: Deadline
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


@dataclass
class _Batch:
    members: list[_Member] = field(default_factory=list)
    rows: int = 0
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class PredictBatcher:
    """`predict(name, version, inputs, output_keys, deadline=...)` with the signature of
    `TFServingClient.predict`, batching concurrent calls (see the module docstring)."""

    def __init__(self, predict: Predict, *, window_s: float, max_rows: int):
        if window_s < 0 or max_rows < 1:
            raise ValueError("window_s must not be negative and max_rows must be at least 1")
        self._predict = predict
        self.window_s = window_s
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._open: dict[tuple, _Batch] = {}

    def predict(self, name: str, version: int, inputs: dict[str, np.ndarray], output_keys: list[str] | None = None,
                deadline: Deadline = NONE) -> dict[str, np.ndarray]:
        rows = _rows(inputs)
        if self.window_s <= 0 or rows is None or rows >= self.max_rows:
            return self._predict(name, version, inputs, output_keys, deadline=deadline)
        key = (name, version, tuple(output_keys or ()),
               tuple((input_name, array.dtype.str, array.shape[1:]) for input_name, array in sorted(inputs.items())))
        member = _Member(inputs, rows, deadline)
        with self._lock:
            batch = self._open.get(key)
            leads = batch is None or batch.rows + rows > self.max_rows
            if leads:
                if batch is not None:
                    batch.full.set()  # no room for this one: the open batch goes now
                batch = self._open[key] = _Batch()
            batch.members.append(member)
            batch.rows += rows
            if batch.rows >= self.max_rows:
                batch.full.set()
        if leads:
            self._lead(key, batch, name, version, output_keys)
        else:
            while not batch.done.wait(WAIT_STEP_S):
                deadline.check(f"waiting for {name}'s batched prediction")
        if member.error is not None:
            raise member.error
        return member.result

    def _lead(self, key: tuple, batch: _Batch, name: str, version: int, output_keys: list[str] | None) -> None:
        batch.full.wait(self.window_s)
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]  # later requests open the next batch
            members = list(batch.members)
        try:
            if len(members) == 1:
                only = members[0]
                only.result = self._predict(name, version, only.inputs, output_keys, deadline=only.deadline)
            else:
                self._together(members, name, version, output_keys)
        except BaseException as exc:  # noqa: BLE001 - every member gets the failure, as a lone call would
            for member in members:
                member.error = exc
        finally:
            batch.done.set()

    def _together(self, members: list[_Member], name: str, version: int, output_keys: list[str] | None) -> None:
        joined = {input_name: np.concatenate([member.inputs[input_name] for member in members])
                  for input_name in members[0].inputs}
        outputs = self._predict(name, version, joined, output_keys, deadline=_joint(members))
        total = sum(member.rows for member in members)
        if any(np.ndim(value) == 0 or len(value) != total for value in outputs.values()):
            # Not one row per image: this model cannot be batched; each request on its own.
            for member in members:
                member.result = self._predict(name, version, member.inputs, output_keys, deadline=member.deadline)
            return
        start = 0
        for member in members:
            member.result = {key: value[start:start + member.rows] for key, value in outputs.items()}
            start += member.rows


def _rows(inputs: dict[str, np.ndarray]) -> int | None:
    """The batch size all inputs share, None when they do not (such a call is not joined)."""
    sizes = {len(array) if np.ndim(array) else None for array in inputs.values()}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def _joint(members: list[_Member]) -> Deadline:
    """The deadline of a joint call: the latest member's, and gone once every member is."""
    remaining = [member.deadline.remaining() for member in members]
    seconds = None if any(value is None for value in remaining) else max(remaining)
    return Deadline(seconds, gone=lambda: all(member.deadline.left() for member in members))
