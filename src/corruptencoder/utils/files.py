"""Image collections from folders (recursive) or file lists, with errors that name the line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from corruptencoder.errors import UserError
from corruptencoder.utils.imageio import is_image_file

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list", ".csv"})


def _path_field(line: str) -> str:
    """The path in ``path``, ``path<TAB>label`` or ``path label`` (paths may contain spaces)."""
    if "\t" in line:
        return line.split("\t")[0].strip()
    head, _, tail = line.rpartition(" ")
    return head.strip() if head and tail.lstrip("-").isdigit() else line


def read_file_list(list_path: str | os.PathLike[str], *, what: str = "image") -> list[Path]:
    """One path per line (``#`` comments and blank lines ignored; a second whitespace-separated
    column such as a label is ignored); relative paths are relative to the list file's folder."""
    list_path = Path(list_path)
    base = list_path.parent
    out: list[Path] = []
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{list_path}: cannot read the file list ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{list_path}: not a UTF-8 text file list; give a folder or a text file with one path "
                        "per line") from None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry = _path_field(line)
        p = Path(entry)
        if not p.is_absolute():
            p = base / p
        if not p.is_file():
            raise UserError(f"{list_path}:{lineno}: {what} file {entry!r} does not exist; fix or remove the line")
        out.append(p)
    return out


def as_paths(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """One path or several, as a list (a string is one path, not its characters)."""
    if isinstance(sources, (str, os.PathLike)):
        return [Path(sources)]
    return [Path(s) for s in sources]


def list_images(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                what: str = "image") -> list[Path]:
    """All image files under folders (recursive, sorted) and in file lists, in the order given."""
    out: list[Path] = []
    for src in as_paths(sources):
        p = Path(src)
        if p.is_dir():
            found = sorted(
                (Path(root) / f for root, _dirs, files in os.walk(p) for f in files if is_image_file(f)),
                key=lambda q: q.relative_to(p).as_posix(),
            )
            if not found:
                raise UserError(f"{p}: {what} folder has no image files (.jpg, .png, ...); "
                                "point to a folder with images")
            out.extend(found)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            found = read_file_list(p, what=what)
            if not found:
                raise UserError(f"{p}: {what} file list is empty; add one path per line")
            out.extend(found)
        elif p.is_file() and is_image_file(p):
            out.append(p)
        elif not p.exists():
            raise UserError(f"{p}: {what} folder or file list does not exist; check the path")
        else:
            raise UserError(f"{p}: not a folder, an image or a file list (.txt); check the path")
    return out
