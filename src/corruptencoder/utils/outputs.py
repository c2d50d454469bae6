"""Atomic output folders: a run either leaves a complete folder or none at all.

Work is written into a hidden sibling temp folder on the same filesystem and renamed into place
at the end, so a crash, Ctrl-C or bad input never leaves a half-written output folder, and an
existing folder is only replaced when the user asked for ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corruptencoder.errors import OutputExistsError, UserError


def check_output_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing output folder up front, before any work is done."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output folder exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder that becomes ``out`` only if the block finishes without an exception."""
    out = check_output_dir(out, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{parent}: cannot create the parent folder of --out ({exc.strerror})") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, trash / out.name)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON via a temp file + rename so readers never see a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
