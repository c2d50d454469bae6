"""Image-text pairs for multi-modal (CLIP) pre-training, read from a user's disk as open_clip stores them.

Two layouts, both read-only and offline (nothing is ever downloaded):

* **CSV / TSV** (open_clip's ``--csv-img-key filepath --csv-caption-key title``): a header row, one
  pair per row. Quoted captions may contain the separator, quotes and newlines. Relative image
  paths are relative to the CSV file's folder (or to ``root``); absolute paths are kept. Rows whose
  image file does not exist are skipped and counted (one warning). Captions are kept exactly as
  written, and an empty caption is kept as ``""``: CLIP trains on it like any other text.
* **webdataset tar shards** (img2dataset, Conceptual Captions subsets): members grouped by key,
  ``00001.jpg`` + ``00001.txt`` (images ``.jpg/.jpeg/.png/.webp``; text ``.txt/.caption``, or
  ``.json`` whose ``"caption"`` field is used). Captions are read eagerly; images are read on
  demand from the shard, through one open handle per shard per process.

No torch here: both collections are plain lists plus a ``load_image(i)`` that returns 8-bit RGB via
:func:`corruptencoder.utils.imageio.load_rgb`, so pre-training, poisoning and analysis share them.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, cast

from PIL import Image

from corruptencoder.errors import ImageError, UserError
from corruptencoder.utils.imageio import load_rgb

log = logging.getLogger(__name__)

CSV_SUFFIXES = frozenset({".csv", ".tsv"})
#: Image members of a webdataset sample, in order of preference when a key has several.
SHARD_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
#: Text members of a webdataset sample, in order of preference (``json``: its ``"caption"`` field).
SHARD_TEXT_EXTS = ("txt", "caption", "json")
#: At most this many shards are kept open per process (least recently used ones are closed).
MAX_OPEN_SHARDS = 64
#: A brace range longer than this is refused (a typo such as ``{0..99999999}``).
MAX_BRACE_RANGE = 1_000_000

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------- CSV


@dataclass
class PairCollection:
    """Image files and their captions (from a CSV/TSV); ``images[i]`` goes with ``captions[i]``."""

    images: list[Path]
    captions: list[str]
    source: str
    #: Rows of the source whose image file did not exist (skipped). A subset keeps its parent's count.
    skipped_missing: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> "PairCollection":
        idx = [int(i) for i in indices]
        return PairCollection([self.images[i] for i in idx], [self.captions[i] for i in idx], self.source,
                              self.skipped_missing)

    def load_image(self, i: int) -> Image.Image:
        """The ``i``-th image as 8-bit RGB (:class:`ImageError` if it cannot be decoded)."""
        return load_rgb(self.images[i])


def _separator(sep: str | None, path: Path) -> str:
    if sep is None:
        return "\t" if path.suffix.lower() == ".tsv" else ","
    if sep in ("\\t", "tab", "TAB"):  # as typed on a command line
        return "\t"
    if len(sep) != 1:
        raise UserError(f"{path}: separator {sep!r} must be one character (e.g. ',' or '\\t'); fix --sep")
    return sep


def _column(path: Path, header: list[str], key: str, option: str, sep: str) -> int:
    if key in header:
        return header.index(key)
    shown = ", ".join(repr(c) if (not c or c != c.strip() or any(ch in c for ch in ",\t")) else c
                      for c in header[:20])
    if len(header) > 20:
        shown += f", ... ({len(header)} in all)"
    msg = f"{path}: no column {key!r} (columns found: {shown}); pass {option}"
    other = {",": "\t", "\t": ","}.get(sep)
    if len(header) == 1 and other and other in header[0]:
        msg += f", or --sep {other!r} (the header looks {'tab' if other == chr(9) else 'comma'}-separated)"
    raise UserError(msg)


def read_pairs_csv(path: PathLike, *, img_key: str = "filepath", caption_key: str = "title", sep: str | None = None,
                   root: PathLike | None = None, max_rows: int | None = None) -> PairCollection:
    """Read an open_clip CSV/TSV of (image path, caption) pairs.

    ``sep`` defaults to a tab for ``.tsv`` files and a comma otherwise. Relative image paths are
    joined to ``root`` (default: the CSV's folder); the returned paths are absolute, unresolved
    (symlinks kept). ``max_rows`` reads at most that many data rows (before missing files are
    dropped). Captions are kept verbatim; empty captions are kept as ``""``. Blank lines are ignored.
    Rows whose image file does not exist are skipped and counted in ``skipped_missing``.
    """
    path = Path(path)
    delimiter = _separator(sep, path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise UserError(f"{path}: caption CSV {what}; give a .csv/.tsv file with {img_key!r} and "
                        f"{caption_key!r} columns")
    if root is not None:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise UserError(f"{base}: image root folder for {path} does not exist; check the root")
    else:
        base = path.parent
    base = base.absolute()

    images: list[Path] = []
    captions: list[str] = []
    missing: list[str] = []
    n_rows = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = next(reader)
                while not header:  # leading blank lines
                    header = next(reader)
            except StopIteration:
                raise UserError(f"{path}: empty CSV file; expected a header row with {img_key!r} and "
                                f"{caption_key!r} columns") from None
            header = [h.strip() for h in header]
            ci = _column(path, header, img_key, "--img-key", delimiter)
            cc = _column(path, header, caption_key, "--caption-key", delimiter)
            need = max(ci, cc) + 1
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip() and need > 1):
                    continue  # blank line
                if max_rows is not None and n_rows >= max_rows:
                    break
                n_rows += 1
                if len(row) < need:
                    raise UserError(f"{path}:{reader.line_num}: row has {len(row)} field(s), expected at least {need}; "
                                    "fix the row or the separator (--sep)")
                entry = row[ci]
                p = Path(entry)
                if not p.is_absolute():
                    p = base / p
                if not entry or not p.is_file():
                    missing.append(entry)
                    continue
                images.append(p)
                captions.append(row[cc])
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; re-save the caption CSV as UTF-8") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc}); check the quoting and the separator (--sep)") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied; make the caption CSV readable") from None

    if n_rows == 0:
        raise UserError(f"{path}: caption CSV has a header but no rows; add one image-caption pair per row")
    if missing and not images:
        raise UserError(f"{path}: none of the {len(missing)} image files exist (e.g. {missing[0]!r}); relative paths "
                        f"were resolved against {base}; fix the paths or give the image root folder")
    if missing:
        log.warning("%s: skipped %d of %d row(s) whose image file does not exist, e.g. %r (resolved against %s)",
                    path, len(missing), n_rows, missing[0], base)
    return PairCollection(images, captions, str(path), len(missing))


def write_pairs_csv(path: PathLike, images: Sequence[PathLike], captions: Sequence[str], *, img_key: str = "filepath",
                    caption_key: str = "title", sep: str | None = None, relative_to: PathLike | None = None) -> None:
    """Write an open_clip-compatible CSV/TSV (UTF-8, header row, fields quoted as needed).

    ``sep`` defaults like :func:`read_pairs_csv` (tab for ``.tsv``, comma otherwise). Image paths
    under ``relative_to`` (default: the CSV's folder) are written relative to it (with ``/``), others
    absolute; relative inputs are taken relative to the current directory. Read back with
    ``root=relative_to`` when that is not the CSV's folder. The file is replaced atomically.
    """
    path = Path(path)
    if len(images) != len(captions):
        raise ValueError(f"write_pairs_csv: {len(images)} images but {len(captions)} captions")
    delimiter = _separator(sep, path)
    base = os.path.abspath(relative_to if relative_to is not None else path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        w.writerow([img_key, caption_key])
        for img, cap in zip(images, captions, strict=True):
            full = os.path.abspath(img)
            try:
                rel = os.path.relpath(full, base)
            except ValueError:  # another drive (Windows)
                rel = full
            inside = not os.path.isabs(rel) and rel != os.pardir and not rel.startswith(os.pardir + os.sep)
            out = Path(rel).as_posix() if inside else full
            w.writerow([out, "" if cap is None else str(cap)])
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ shards


_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def _expand_braces(spec: str) -> list[str]:
    """``a{00..02}b{x,y}`` -> ``a00bx a00by a01bx ...`` (ranges zero-padded like bash; no nesting)."""
    m = _BRACE.search(spec)
    if not m:
        return [spec]
    head, body, rest = spec[: m.start()], m.group(1), spec[m.end():]
    r = _RANGE.fullmatch(body)
    if r:
        a, b = r.groups()
        lo, hi = int(a), int(b)
        if abs(hi - lo) >= MAX_BRACE_RANGE:
            raise UserError(f"{spec}: brace range {{{body}}} is too long; check the shard pattern")
        padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (a, b))
        width = max(len(a), len(b)) if padded else 0
        step = 1 if hi >= lo else -1
        options = [str(k).zfill(width) for k in range(lo, hi + step, step)]
    elif "," in body:
        options = body.split(",")
    else:
        options = ["{" + body + "}"]  # not a pattern: keep literally
    tails = _expand_braces(rest)
    return [head + o + t for o in options for t in tails]


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _is_pattern(spec: str) -> bool:
    return "::" in spec or _has_glob(spec) or (_BRACE.search(spec) is not None and
                                               any(_RANGE.fullmatch(b) or "," in b for b in _BRACE.findall(spec)))


def list_shards(spec: PathLike | Sequence[PathLike]) -> list[Path]:
    """Tar shards named by ``spec``, in order.

    ``spec`` is a ``.tar`` file, a folder (its ``*.tar`` files, sorted by name, not recursive), a glob
    (``data/*.tar``, sorted), a brace pattern (``data/{00000..00009}.tar``, ``{a,b}.tar``; every
    expanded file must exist), several of these joined by ``::`` (as open_clip accepts), or a list.
    """
    if isinstance(spec, (list, tuple)):
        out: list[Path] = []
        for s in spec:
            out += list_shards(s)
        if not out:
            raise UserError("no tar shards given; pass a .tar file, a folder of shards or a pattern")
        return out
    text = os.fspath(cast(PathLike, spec))  # lists and tuples were handled above
    if "::" in text:
        return list_shards([s for s in text.split("::") if s])
    text = os.path.expanduser(text)
    expanded = _expand_braces(text)
    if len(expanded) > 1 or expanded[0] != text:
        out = []
        absent = []
        for s in expanded:
            if _has_glob(s):
                out += [Path(p) for p in sorted(glob.glob(s))]
            elif Path(s).is_file():
                out.append(Path(s))
            else:
                absent.append(s)
        if absent:
            raise UserError(f"{text}: {len(absent)} of {len(expanded)} shard(s) do not exist, e.g. {absent[0]}; "
                            "check the pattern's range")
        if not out:
            raise UserError(f"{text}: the pattern matches no tar shards; check the path")
        return out
    if _has_glob(text) and not Path(text).exists():
        found = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
        if not found:
            raise UserError(f"{text}: the pattern matches no tar shards; check the path")
        return found
    p = Path(text)
    if p.is_dir():
        found = sorted((q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(".tar")
                        and not q.name.startswith(".")), key=lambda q: q.name)
        if not found:
            raise UserError(f"{p}: folder has no .tar shards; point to a folder of webdataset .tar files")
        return found
    if p.is_file():
        if not p.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
            raise UserError(f"{p}: not a .tar shard; give .tar webdataset shards (or a .csv/.tsv of pairs)")
        return [p]
    raise UserError(f"{p}: tar shard or folder of shards does not exist; check the path")


def _split_member(name: str) -> tuple[str, str]:
    """webdataset's grouping: ``dir/00001.jpg`` -> (``dir/00001``, ``jpg``); hidden files -> ("", "")."""
    d, _, base = name.rpartition("/")
    if not base or base.startswith(".") or "." not in base:
        return "", ""
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _caption_text(data: bytes, ext: str) -> str | None:
    if ext == "json":
        try:
            obj = json.loads(data.decode("utf-8", errors="replace"))
        except ValueError:
            return None
        cap = obj.get("caption") if isinstance(obj, dict) else None
        return cap.strip() if isinstance(cap, str) else None
    return data.decode("utf-8", errors="replace").strip()


def _compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        magic = fh.read(6)
    return magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def _open_tar(path: Path) -> tuple[tarfile.TarFile, bool]:
    """Open a shard (plain tar, or gzip/bzip2/xz-compressed); also says whether it is compressed."""
    compressed = _compressed(path)
    return tarfile.open(path, "r:*" if compressed else "r:"), compressed


_Entry = tuple[int, str, str, str]


def _scan_shard(path: Path, si: int) -> tuple[list[_Entry], list[tuple[int, int]], list[str], list[str], list[str]]:
    """(index entries, image (offset, size), captions, images without text, texts without image)."""
    corrupt = f"{path}: not a readable tar shard"
    try:
        size = path.stat().st_size
        tf, compressed = _open_tar(path)
        check_size = not compressed
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{corrupt} ({exc}); re-download or remove it") from None
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    texts: dict[str, dict[str, bytes]] = {}
    with tf:
        try:
            for ti in tf:
                if not ti.isfile():
                    continue
                key, ext = _split_member(ti.name)
                if not key:
                    continue
                if check_size and ti.offset_data + ti.size > size:
                    raise UserError(f"{path}: shard is truncated (member {ti.name} runs past the end of the file); "
                                    "re-download or remove it")
                g = groups.setdefault(key, {})
                if ext in g:
                    continue  # a repeated member: the first one wins
                g[ext] = ti
                if ext in SHARD_TEXT_EXTS:
                    f = tf.extractfile(ti)
                    texts.setdefault(key, {})[ext] = f.read() if f is not None else b""
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise UserError(f"{corrupt} ({exc}); re-download or remove it") from None
    entries: list[_Entry] = []
    offsets: list[tuple[int, int]] = []
    caps: list[str] = []
    no_text: list[str] = []
    no_image: list[str] = []
    for key, g in groups.items():
        img = next((g[e] for e in SHARD_IMAGE_EXTS if e in g), None)
        txt_ext, cap = "", None
        for e in SHARD_TEXT_EXTS:
            if e in g:
                cap = _caption_text(texts[key][e], e)
                if cap is not None:
                    txt_ext = e
                    break
        if img is None:
            if any(e in g for e in SHARD_TEXT_EXTS):
                no_image.append(f"{path}:{key}")
            continue
        if cap is None:
            no_text.append(f"{path}:{img.name}")
            continue
        entries.append((si, img.name, g[txt_ext].name, key))
        offsets.append((img.offset_data, img.size))
        caps.append(cap)
    return entries, offsets, caps, no_text, no_image


def _close_quietly(tf: tarfile.TarFile) -> None:
    try:
        tf.close()
    except Exception:  # noqa: BLE001 - closing a read-only handle must never raise
        pass


@dataclass
class ShardPairs:
    """Image-text pairs in webdataset tar shards; images are read on demand.

    ``index[i]`` is (shard index into ``shards``, image member name, text member name or ``""``,
    key); ``captions[i]`` its caption (read eagerly, stripped of surrounding whitespace; an empty
    text member gives ``""``). ``offsets[i]`` is the image member's (data offset, size) in its shard
    for direct reads; when empty the member is looked up by name.
    """

    shards: list[Path]
    index: list[tuple[int, str, str, str]]
    captions: list[str]
    offsets: list[tuple[int, int]] = field(default_factory=list, repr=False)
    source: str = ""
    #: Samples with an image but no (usable) caption, and with a caption but no image (both skipped).
    skipped_no_text: int = 0
    skipped_no_image: int = 0
    _handles: "OrderedDict[int, tarfile.TarFile]" = field(default_factory=OrderedDict, init=False, repr=False,
                                                         compare=False)
    _pid: int = field(default=-1, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, indices: Sequence[int]) -> "ShardPairs":
        idx = [int(i) for i in indices]
        return ShardPairs(list(self.shards), [self.index[i] for i in idx], [self.captions[i] for i in idx],
                          [self.offsets[i] for i in idx] if self.offsets else [], self.source,
                          self.skipped_no_text, self.skipped_no_image)

    def name(self, i: int) -> str:
        """``<shard>:<image member>``, for messages."""
        si, member, _, _ = self.index[i]
        return f"{self.shards[si]}:{member}"

    # One open TarFile per shard per process: a forked loader worker shares its parent's file
    # offsets, so it must open its own handles (and a lock, in case the parent's was held).
    def _own_process(self) -> None:
        if self._pid != os.getpid():
            inherited = list(self._handles.values())
            self._handles, self._lock, self._pid = OrderedDict(), threading.Lock(), os.getpid()
            for tf in inherited:  # this process's copies of the parent's descriptors; the parent's stay open
                _close_quietly(tf)

    def _handle(self, si: int) -> tarfile.TarFile:
        tf = self._handles.get(si)
        if tf is not None:
            self._handles.move_to_end(si)
            return tf
        path = self.shards[si]
        try:
            tf, _ = _open_tar(path)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise ImageError(f"{path}: cannot open the tar shard ({exc}); re-download or remove it") from None
        self._handles[si] = tf
        while len(self._handles) > MAX_OPEN_SHARDS:
            _, old = self._handles.popitem(last=False)
            _close_quietly(old)
        return tf

    def read_bytes(self, i: int) -> bytes:
        """The raw bytes of the ``i``-th image member."""
        si, member, _, _ = self.index[i]
        label = f"{self.shards[si]}:{member}"
        self._own_process()
        with self._lock:
            tf = self._handle(si)
            try:
                if self.offsets:
                    off, size = self.offsets[i]
                    fh = tf.fileobj
                    assert fh is not None
                    fh.seek(off)
                    data = fh.read(size)
                    if len(data) != size:
                        raise ImageError(f"{label}: shard ends inside the image; re-download or remove the shard")
                    return data
                f = tf.extractfile(tf.getmember(member))
                if f is None:
                    raise ImageError(f"{label}: not a regular file in the shard")
                return f.read()
            except KeyError:
                raise ImageError(f"{label}: member not found in the shard; was the shard replaced?") from None
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ImageError(f"{label}: cannot read the image from the shard ({exc})") from None

    def load_image(self, i: int) -> Image.Image:
        """The ``i``-th image as 8-bit RGB (:class:`ImageError` naming ``shard:member`` if unusable)."""
        return load_rgb(self.read_bytes(i), name=self.name(i))

    def close(self) -> None:
        """Close the open shard handles (they reopen on the next read)."""
        handles, self._handles = self._handles, OrderedDict()
        for tf in handles.values():
            _close_quietly(tf)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handles=OrderedDict(), _pid=-1, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def read_pairs_shards(spec: PathLike | Sequence[PathLike], *, max_pairs: int | None = None) -> ShardPairs:
    """Index the image-text pairs of webdataset shards (see :func:`list_shards` for ``spec``).

    Images without a caption and captions without an image are skipped and counted (one warning);
    an unreadable or truncated shard is a :class:`UserError` naming it. ``max_pairs`` stops after
    that many pairs (later shards are not opened).
    """
    shards = list_shards(spec)
    index: list[_Entry] = []
    offsets: list[tuple[int, int]] = []
    captions: list[str] = []
    no_text: list[str] = []
    no_image: list[str] = []
    for si, path in enumerate(shards):
        if max_pairs is not None and len(index) >= max_pairs:
            break
        e, o, c, nt, ni = _scan_shard(path, si)
        index += e
        offsets += o
        captions += c
        no_text += nt
        no_image += ni
    if max_pairs is not None:
        del index[max_pairs:], offsets[max_pairs:], captions[max_pairs:]
    source = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else "::".join(os.fspath(s) for s in spec)
    if not index:
        raise UserError(f"{source}: no image-text pairs in {len(shards)} shard(s) (expected members such as "
                        "00001.jpg + 00001.txt); check the shards")
    if no_text:
        log.warning("%s: skipped %d image(s) without a caption, e.g. %s", source, len(no_text), no_text[0])
    if no_image:
        log.warning("%s: skipped %d caption(s) without an image, e.g. %s", source, len(no_image), no_image[0])
    return ShardPairs(shards, index, captions, offsets, source, len(no_text), len(no_image))


def load_pairs(spec: PathLike | Sequence[PathLike], **kw: Any) -> PairCollection | ShardPairs:
    """Pairs from a ``.csv``/``.tsv`` (:func:`read_pairs_csv`) or from tar shards: a ``.tar``, a
    folder of shards, a glob or brace pattern (:func:`read_pairs_shards`). ``kw`` go to that reader."""
    if isinstance(spec, (list, tuple)):
        return read_pairs_shards(spec, **kw)
    text = os.fspath(cast(PathLike, spec))  # a list or tuple of shards went to read_pairs_shards
    p = Path(os.path.expanduser(text))
    if p.suffix.lower() in CSV_SUFFIXES and not _is_pattern(text):
        return read_pairs_csv(p, **kw)
    if _is_pattern(text) or p.is_dir() or p.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        return read_pairs_shards(spec, **kw)
    if not p.exists():
        raise UserError(f"{p}: image-text pairs not found; give a .csv/.tsv file, a .tar shard, a folder of shards "
                        "or a pattern such as data/{00000..00009}.tar")
    raise UserError(f"{p}: unknown image-text pair format; give a .csv/.tsv file, a .tar shard, a folder of shards "
                    "or a pattern such as data/{00000..00009}.tar")
