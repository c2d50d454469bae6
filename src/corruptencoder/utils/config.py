"""Typed YAML/JSON configs: a wrong key or value fails at load time with its dotted path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from corruptencoder.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class NestedError(ValueError):
    """Raised by a validator that validated a sub-section itself (a method's, an attack's or a defence's
    own model): carries the inner errors' key paths so the message names ``method.queue_size``, not
    ``method``."""

    def __init__(self, exc: ValidationError) -> None:
        self.errors = [(tuple(e.get("loc", ())), _message(e)) for e in exc.errors()]
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in self.errors[:3]))


def _message(err: Any) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown key (misspelt?)"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def format_validation_error(exc: ValidationError, source: str, rename: Callable[[str], str] | None = None) -> str:
    """One line: the first errors as ``key.path: message``; ``rename`` maps a key path to what the user
    typed (e.g. ``targets.0.alpha`` -> ``--alpha``)."""
    flat: list[tuple[tuple[Any, ...], str]] = []
    for err in exc.errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, NestedError):
            flat += [(tuple(err.get("loc", ())) + loc, msg) for loc, msg in inner.errors]
        else:
            flat.append((tuple(err.get("loc", ())), _message(err)))
    names = [".".join(str(p) for p in loc) or "(top level)" for loc, _ in flat[:3]]
    parts = [f"{rename(n) if rename else n}: {msg}" for n, (_, msg) in zip(names, flat[:3], strict=True)]
    exc_count = len(flat)
    more = f" (+{exc_count - 3} more)" if exc_count > 3 else ""
    return (f"{source}: " if source else "") + "; ".join(parts) + more


def read_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ConfigError(f"{path}: not a regular file (a device or a pipe); give a YAML or JSON config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML or JSON, UTF-8); check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file; check the path") from None
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


def validate(model: type[M], data: dict[str, Any], source: str, rename: Callable[[str], str] | None = None) -> M:
    """The one way configs are built: a wrong key or value is a ConfigError naming its path (or flag)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, rename)) from None
    except ConfigError as exc:  # from a model validator that checks a part itself (an experiment's arms)
        if source and not str(exc).startswith(f"{source}:"):
            raise ConfigError(f"{source}: {exc}") from None
        raise


def set_key(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set ``a.b.c`` in a nested dict (sections created as needed); returns ``data``."""
    node = data
    parts = key.split(".")
    for k in parts[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[parts[-1]] = value
    return data


def load_config(model: type[M], path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = (),
                base: dict[str, Any] | None = None) -> M:
    """Read ``path`` (YAML or JSON), apply ``key.path=value`` overrides, validate into ``model``."""
    data = dict(base or {})
    if path is not None:
        data.update(read_mapping(path))
    data = apply_overrides(data, overrides)
    return validate(model, data, str(path) if path else "config")


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
