"""Small converters for method options given on the command line or in a recipe."""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import ConfigError


def as_list(value: Any) -> list[Any]:
    """``"a,b"`` / ``["a", "b"]`` / ``None`` -> a list."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def parse_option_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["confidence=0.9", "teachers=a,b"]`` -> typed values (YAML scalars, never code)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option '{pair}' must look like key=value (e.g. --option confidence=0.9)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        options[key.strip().replace("-", "_")] = value
    return options


def number(options: dict[str, Any], name: str, low: float, high: float, method: str) -> float:
    value = options[name]
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--method {method}: option {name} must be a number, got '{value}'") from None
    if not low <= value <= high:
        raise ConfigError(f"--method {method}: option {name} must be in [{low}, {high}], got {value}")
    return value


def flag(options: dict[str, Any], name: str, method: str) -> bool:
    """A true/false option; anything else is named instead of being read as true."""
    value = options[name]
    if not isinstance(value, bool):
        raise ConfigError(f"--method {method}: option {name} must be true or false, got '{value}'")
    return value


def choice(options: dict[str, Any], name: str, allowed: tuple[str, ...], method: str) -> str:
    """One of ``allowed``; anything else is named with the choices."""
    value = options[name]
    if value not in allowed:
        raise ConfigError(
            f"--method {method}: option {name} must be one of {', '.join(allowed)}, got '{value}'"
        )
    return str(value)
