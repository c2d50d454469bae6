"""Atomic output folders: a run either leaves a complete folder or none at all.

Work is written into a hidden sibling temp folder on the same filesystem and renamed into place
at the end, so a crash, Ctrl-C, SIGTERM or bad input never leaves a half-written output folder, and
an existing folder is only replaced when the user asked for ``--overwrite``. Each temp folder records
its owner (pid, process start time, host) in ``.owner``: a run killed with SIGKILL cannot clean up,
so the next run into the same parent folder removes the temp folders whose owner is gone (and
reports those it cannot attribute).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corruptencoder.errors import OutputExistsError, UserError
from corruptencoder.utils.signals import pid_alive, process_start_time, signals_deferred

log = logging.getLogger(__name__)
OWNER = ".owner"
_TEMP_PATTERNS = (".*.tmp-*", ".*.old-*")
_reported: set[str] = set()


def check_output_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing output folder up front, before any work is done."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output folder exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    return out


def _owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "start": process_start_time(pid), "host": socket.gethostname()}


def _make_temp(parent: Path, prefix: str, out: Path) -> Path:
    """A hidden temp folder in ``parent`` with its owner recorded; unwritable places are one clear line."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        (tmp / OWNER).write_text(json.dumps(_owner_record()), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{out}: cannot write here ({exc.strerror or exc}); choose another output folder "
                        "(e.g. another --out) or fix the folder's permissions or free space") from None
    return tmp


def owner_gone(folder: Path) -> bool | None:
    """True if the run that owns this temp folder has ended, False if it is running, None if unknown
    (no owner record, or a run on another host)."""
    try:
        owner = json.loads((folder / OWNER).read_text(encoding="utf-8"))
        pid, start, host = int(owner["pid"]), owner.get("start"), owner.get("host")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    if not pid_alive(pid):
        return True
    return start is not None and process_start_time(pid) not in (None, start)  # the id was reused


def remove_stale_temp(parent: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp folders of dead runs in ``parent`` (left by SIGKILL or a power cut); report, once,
    those without an owner record. Returns the removed folders."""
    parent = Path(parent)
    removed: list[Path] = []
    try:
        candidates = sorted({p for pat in _TEMP_PATTERNS for p in parent.glob(pat) if p.is_dir()})
    except OSError:
        return removed
    for folder in candidates:
        gone = owner_gone(folder)
        if gone:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
                log.info("removed %s, left behind by an interrupted run", folder)
        elif gone is None and str(folder) not in _reported and not (folder / OWNER).exists():
            _reported.add(str(folder))
            log.warning("%s looks like the temp folder of an interrupted run (no owner record); delete it "
                        "if no run is writing there", folder)
    return removed


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder that becomes ``out`` only if the block finishes without an exception (a
    signal included: the temp folder is removed before the exception goes on)."""
    out = check_output_dir(out, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((a for a in (parent, *parent.parents) if a.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{existing}: is a file, not a folder, so the output {out} cannot be made there; choose "
                        "another output folder (e.g. another --out)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{parent}: cannot create the parent folder of the output {out} ({exc.strerror}); "
                        "choose another output folder (e.g. another --out)") from None
    if not parent.is_dir():
        raise UserError(f"{parent}: is not a folder, so {out} cannot be created there; choose another --out")
    remove_stale_temp(parent)
    tmp = _make_temp(parent, f".{out.name}.tmp-", out)
    try:
        yield tmp
        (tmp / OWNER).unlink(missing_ok=True)
    except BaseException:
        with signals_deferred():  # a second Ctrl-C or SIGTERM cannot leave half the folder behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    with signals_deferred():
        if out.exists():
            trash = _make_temp(parent, f".{out.name}.old-", out)
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)


def check_writable(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Fail now, in one line, if ``path`` (a folder or file written later) could not be created: its nearest
    existing parent must be a folder we can write in. Writes nothing that stays."""
    path = Path(path)
    parent = next((a for a in (path.parent, *path.parent.parents) if a.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".corruptencoder-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {parent} ({exc.strerror or exc}); choose another {flag} "
                        "or fix the folder's permissions") from None


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON via a temp file + rename so readers never see a half file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc}); choose another path or fix the folder's "
                        "permissions or free space") from None
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
