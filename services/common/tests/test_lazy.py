"""lazy_module: the real import waits for the first attribute, then every attribute is the module's."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from mlstudio.common.lazy import lazy_module


def test_the_module_is_imported_at_first_use_and_only_then(tmp_path, monkeypatch):
    (tmp_path / "heavy_for_lazy_test.py").write_text("LOADS = 1\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "heavy_for_lazy_test", raising=False)
    heavy = lazy_module("heavy_for_lazy_test")
    assert "heavy_for_lazy_test" not in sys.modules
    assert "not imported yet" in repr(heavy)
    assert heavy.double(21) == 42
    assert "heavy_for_lazy_test" in sys.modules
    assert heavy.LOADS == sys.modules["heavy_for_lazy_test"].LOADS == 1


def test_a_missing_module_fails_at_first_use_as_an_import_would():
    missing = lazy_module("no_such_module_for_lazy_test")
    with pytest.raises(ModuleNotFoundError, match="no_such_module_for_lazy_test"):
        missing.anything  # noqa: B018 - the lookup is the test


def test_a_first_use_while_another_thread_imports_waits_for_the_whole_module(tmp_path, monkeypatch):
    # The module sits half-initialised in sys.modules while its body runs: a second user must
    # wait for it (two video jobs starting at once met cv2 so and failed).
    (tmp_path / "slow_for_lazy_test.py").write_text("import time\ntime.sleep(0.5)\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_for_lazy_test", raising=False)
    slow = lazy_module("slow_for_lazy_test")
    first: list[int] = []
    importing = threading.Thread(target=lambda: first.append(slow.VALUE))
    importing.start()
    while "slow_for_lazy_test" not in sys.modules:  # the other thread's import has begun
        time.sleep(0.001)
    assert slow.VALUE == 7
    importing.join()
    assert first == [7]
