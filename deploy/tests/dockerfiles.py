"""A small Dockerfile reader for the tests: stages, their instructions, and what a build target
ends up with (its base image chain, user, health check and command)."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path


@dataclasses.dataclass
class Stage:
    name: str
    base: str  # an image, or the name of an earlier stage
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    def last(self, instruction: str) -> str | None:
        found = [args for name, args in self.instructions if name == instruction]
        return found[-1] if found else None


@dataclasses.dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARG defaults declared before the first FROM
    stages: list[Stage]

    def stage(self, target: str | None) -> Stage:
        """The stage `docker build --target target` builds (the last one without a target)."""
        if target is None:
            return self.stages[-1]
        return next(s for s in self.stages if s.name == target)

    def chain(self, target: str | None) -> list[Stage]:
        """`target`'s stage and the stages it is built on, nearest first."""
        stages = [self.stage(target)]
        names = {s.name for s in self.stages}
        while stages[-1].base in names:
            stages.append(self.stage(stages[-1].base))
        return stages

    def effective(self, target: str | None, instruction: str) -> str | None:
        """The value of USER, CMD, HEALTHCHECK... that the target image ends up with."""
        for stage in self.chain(target):
            value = stage.last(instruction)
            if value is not None:
                return value
        return None

    def base_image(self, target: str | None) -> str:
        """The image that the target is ultimately built FROM, ARG defaults substituted."""
        return self.resolve(self.chain(target)[-1].base)

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], text)

    def command(self, target: str | None) -> list[str]:
        """The target's CMD (exec form)."""
        value = self.effective(target, "CMD")
        return json.loads(value) if value else []

    def all_instructions(self) -> list[tuple[str, str]]:
        return [pair for stage in self.stages for pair in stage.instructions]


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            if match is None:
                raise ValueError(f"{path}: cannot read FROM {rest!r}")
            stages.append(Stage(match.group(2) or f"stage-{len(stages)}", match.group(1), []))
        elif not stages:
            if instruction == "ARG" and "=" in rest:
                name, _, default = rest.partition("=")
                args[name] = default
        else:
            stages[-1].instructions.append((instruction, rest))
    return Dockerfile(path, args, stages)
