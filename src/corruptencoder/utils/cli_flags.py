"""Command-line flags generated from a typed options model, so an attack's or a defence's options are
declared once (in its own file) and the CLI offers them as ``--flag`` without being edited."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

from pydantic import BaseModel


def flag(field: str) -> str:
    """The flag of a field (or of a key path's first part): ``queue_size`` -> ``--queue-size``."""
    return "--" + field.split(".")[0].replace("_", "-")


def _arg_spec(annotation: Any) -> dict[str, Any]:
    """argparse keywords for a field's annotation (Optional unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _arg_spec(members[0]) if len(members) == 1 else {}
    if origin is Literal:
        choices = list(typing.get_args(annotation))
        return {"choices": choices, "type": type(choices[0])} if choices else {}
    if origin is tuple:
        args = typing.get_args(annotation)
        if args and all(a is args[0] for a in args) and args[0] in (int, float, str):
            return {"nargs": len(args), "type": args[0]}
        return {}
    if origin is list:
        args = typing.get_args(annotation)
        return {"nargs": "+", "type": args[0] if args and args[0] in (int, float, str) else str}
    if annotation is bool:
        return {"type": _boolean, "metavar": "BOOL"}
    if annotation in (int, float, str):
        return {"type": annotation}
    return {}


def _boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def add_model_flags(group: Any, model: type[BaseModel], skip: Iterable[str] = (),
                    seen: set[str] | None = None) -> list[str]:
    """Add one optional flag per field of ``model`` (default None = "not given"); returns the fields added.
    ``seen`` collects flags already added by another model, which are then not added twice."""
    added = []
    for name, info in model.model_fields.items():
        if name in skip or (seen is not None and name in seen):
            continue
        spec = _arg_spec(info.annotation)
        if not spec:
            continue
        default = info.get_default() if not info.is_required() else None
        help_text = (info.description or name.replace("_", " "))
        if default is not None and not isinstance(default, (list, dict)):
            help_text += f" (default {default})"
        group.add_argument(flag(name), dest=name, default=None, help=help_text, **spec)
        added.append(name)
        if seen is not None:
            seen.add(name)
    return added


def given(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """The fields among ``fields`` that the user gave on the command line."""
    out = {}
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out
