"""Project types and model statuses are spelled once, in `mlstudio.common.vocabulary`: a service
module that compares with (or stores) one of them as a string literal of its own is found here."""
from __future__ import annotations

import ast
from pathlib import Path

from mlstudio.common import vocabulary

SERVICES = Path(__file__).resolve().parents[2]
WORDS = set(vocabulary.PROJECT_TYPES) | set(vocabulary.MODEL_STATUSES)
# The same spelling with another meaning: an evaluation's own statuses (Pending, Running, Done,
# Failed) and the name of the image API's documented `Detection` body.
OTHER_MEANINGS = {
    ("model/model_service/evaluation/service.py", "Pending"),
    ("model/model_service/evaluation/service.py", "Failed"),
    ("image/image_service/api/images.py", "Detection"),
}


def _literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in WORDS and id(node) not in docstrings}


def test_service_code_uses_the_shared_words_not_literals_of_its_own():
    found = []
    for path in sorted(SERVICES.glob("*/*/**/*.py")):
        relative = path.relative_to(SERVICES).as_posix()
        if "/tests/" in relative or "/v1/" in relative or relative == "common/mlstudio/common/vocabulary.py":
            continue
        found += [(relative, word) for word in _literals(path) if (relative, word) not in OTHER_MEANINGS]
    assert found == [], "use mlstudio.common.vocabulary for these"


def test_the_words_are_the_api_s():
    assert vocabulary.PROJECT_TYPES == ("Classification", "Detection")
    assert vocabulary.MODEL_STATUSES == ("Pending", "Training", "Trained", "Failed")
