"""Where the command line keeps the gateway URL and the token between commands:
`$XDG_CONFIG_HOME/mlstudio/config.json` (default `~/.config/mlstudio/`), readable by its owner
only. `MLSTUDIO_URL` and `MLSTUDIO_TOKEN` override it (for CI and scripts), and
`MLSTUDIO_CONFIG` names another file. The token is never printed."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclasses.dataclass
class Profile:
    """The saved session: the gateway, and who is logged in."""

    url: str = DEFAULT_URL
    token: str | None = None
    user_id: int | None = None
    username: str | None = None

    def __repr__(self) -> str:  # a repr in a traceback or a log never shows the token
        return f"Profile(url={self.url!r}, user_id={self.user_id!r}, username={self.username!r}, token={'set' if self.token else None})"


def config_path() -> Path:
    if os.environ.get("MLSTUDIO_CONFIG"):
        return Path(os.environ["MLSTUDIO_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mlstudio" / "config.json"


def load() -> Profile:
    """The saved profile with the environment's overrides applied."""
    profile = Profile()
    path = config_path()
    if path.is_file():
        saved = json.loads(path.read_text() or "{}")
        profile = Profile(**{field.name: saved[field.name] for field in dataclasses.fields(Profile) if field.name in saved})
    if os.environ.get("MLSTUDIO_URL"):
        profile.url = os.environ["MLSTUDIO_URL"]
    if os.environ.get("MLSTUDIO_TOKEN"):
        # a token from the environment is someone else's session than the saved one
        profile.token, profile.user_id, profile.username = os.environ["MLSTUDIO_TOKEN"], None, None
    return profile


def save(profile: Profile) -> Path:
    """Writes the profile, created 0600 so that no other user can read the token; replaced in one
    rename so a crash never leaves half a file."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)  # a leftover would keep its own (perhaps wider) mode
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dataclasses.asdict(profile), out, indent=2)
    os.replace(partial, path)
    return path


def clear() -> None:
    """Forgets the token (logout), keeping the URL."""
    path = config_path()
    saved = json.loads(path.read_text() or "{}") if path.is_file() else {}
    save(Profile(url=saved.get("url", DEFAULT_URL)))
