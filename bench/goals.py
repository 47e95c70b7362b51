"""The product's performance goals (issue 8), as data: each scenario says which hold."""

from __future__ import annotations


def goal(text: str, value: float | None, target: float, *, at_least: bool) -> dict:
    """`value` compared with `target`: held when value >= target (`at_least`) or <= target."""
    if value is None:
        met = None
    else:
        met = value >= target if at_least else value <= target
    return {"goal": text, "value": None if value is None else round(value, 3), "target": target, "met": met}


def all_met(goals: list[dict]) -> bool | None:
    if any(item["met"] is None for item in goals):
        return None
    return all(item["met"] for item in goals)
