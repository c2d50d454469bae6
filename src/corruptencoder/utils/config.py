"""Typed YAML/JSON configs: a wrong key or value fails at load time with its dotted path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from corruptencoder.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML/JSON{where}; fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` with the value parsed as YAML (numbers, booleans, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, _, raw = item.partition("=")
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list) and k.isdigit() and int(k) < len(node):
                node = node[int(k)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(keys[: i + 1])} is not a section")
            node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(keys[:-1])} is not a section")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(model: type[M], path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                base: dict[str, Any] | None = None) -> M:
    """Read ``path`` (YAML or JSON), apply ``key.path=value`` overrides, validate into ``model``."""
    data = dict(base or {})
    if path is not None:
        data.update(read_mapping(path))
    data = apply_overrides(data, overrides)
    return validate(model, data, str(path) if path else "config")


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
