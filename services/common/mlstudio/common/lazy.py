"""A module imported on first use, for heavy libraries a process may never need while it idles.

`cv2 = lazy_module("cv2")` at the top of a file reads like the import it replaces; the real
import happens at the first attribute looked up (`cv2.VideoCapture`), once per process, through
`importlib.import_module`: a thread that comes while another is still importing waits for the
module to be whole (Python's per-module import lock), where `sys.modules` alone would hand it the
half-initialised module. Later lookups find the module on the instance.
"""
from __future__ import annotations

import importlib
import sys


class LazyModule:
    """Stands for module `name` until it is used; then forwards every attribute to it."""

    def __init__(self, name: str):
        self.__name = name

    def __getattr__(self, attribute: str):
        module = self.__dict__.get("_module")
        if module is None:
            module = importlib.import_module(self.__name)
            self._module = module
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name!r}{'' if self.__name in sys.modules else ', not imported yet'}>"


def lazy_module(name: str) -> LazyModule:
    return LazyModule(name)
