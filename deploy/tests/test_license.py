"""The repository's licence is stated once in LICENSE, and every installable package of it (the
services, the shared library, the client) declares that same licence in its metadata."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_declares_the_licence_of_the_license_file():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    pyprojects = [REPO / "client" / "pyproject.toml", *sorted((REPO / "services").glob("*/pyproject.toml"))]
    assert len(pyprojects) >= 7
    declared = {str(path.relative_to(REPO)): tomllib.loads(path.read_text())["project"].get("license") for path in pyprojects}
    assert declared == dict.fromkeys(declared, "Apache-2.0")


def test_the_readme_and_the_third_party_notice_point_to_it():
    assert "[LICENSE](LICENSE)" in (REPO / "README.md").read_text()
    assert "LICENSE" in (REPO / "THIRD_PARTY.md").read_text().split("\n\n", 2)[1]
