"""docs/configuration.md's settings tables are the settings declarations, rendered: a setting
added, removed or changed in the code without `make docs` fails here."""
from __future__ import annotations

import dataclasses
import re

from mlstudio.common.settings import env

from deploy import configuration_doc

# `env("NAME", ...)`: how every setting is declared (mlstudio.common.settings.env).
DECLARATION = re.compile(r"""\benv\(\s*["']([A-Z][A-Z0-9_]*)["']\s*,""")


def test_the_page_holds_the_tables_the_declarations_give():
    page = configuration_doc.PAGE.read_text()
    assert configuration_doc.updated(page) == page, "docs/configuration.md is out of date: run `make docs`"
    assert configuration_doc.main(["--check"]) == 0


def test_every_setting_declared_anywhere_in_the_code_is_in_the_tables():
    """A settings class outside the places the generator knows would be left out of the page:
    every `env("NAME")` of the code must be documented."""
    rendered = configuration_doc.render()
    declared = {}
    for path in configuration_doc.REPO.glob("**/*.py"):
        relative = path.relative_to(configuration_doc.REPO)
        if relative.parts[0].startswith(".") or "tests" in relative.parts or relative.parts[0] == "client":
            continue
        for name in DECLARATION.findall(path.read_text()):
            declared.setdefault(name, str(relative))
    assert len(declared) > 50, declared
    missing = {name: where for name, where in declared.items() if f"| `{name}` |" not in rendered}
    assert not missing, f"settings declared but not documented (add their class to deploy/configuration_doc.py): {missing}"


def test_a_new_service_setting_appears_in_its_service_table(monkeypatch):
    """The generator reads the classes, not a list of variables: a field added to a service's
    settings is rendered with its default and help (what the lead relies on when merging
    branches that add settings)."""
    import image_service.settings as image_settings

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ImageSettings(image_settings.ImageSettings):
        export_zip_level: int = env("EXPORT_ZIP_LEVEL", 6, help="zlib level | of exported zips")

    ImageSettings.__module__ = image_settings.__name__
    monkeypatch.setattr(image_settings, "ImageSettings", ImageSettings)
    rendered = configuration_doc.render()
    section = rendered.split("### The image service", 1)[1].split("###", 1)[0]
    assert "| `EXPORT_ZIP_LEVEL` | `6` | zlib level \\| of exported zips |" in section
    assert "| `MAX_IMAGE_BYTES` | `20971520` (20 MiB) |" in section
    # The settings every service shares are listed once, in their own table.
    assert "`MONGO_URI`" not in section
    page = configuration_doc.PAGE.read_text()
    assert configuration_doc.updated(page) != page


def test_defaults_are_shown_as_one_would_write_them():
    fmt = configuration_doc.format_default
    assert fmt(True) == "`true`"
    assert fmt(600.0) == "`600`" and fmt(0.5) == "`0.5`"
    assert fmt(256 * 1024 * 1024) == "`268435456` (256 MiB)" and fmt(8500) == "`8500`"
    assert fmt(("a", "b")) == "`a,b`" and fmt(()) == "(empty)" and fmt("") == "(empty)"
    assert fmt(dataclasses.MISSING) == "(required)"
