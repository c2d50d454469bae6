"""Progress that a terminal and a log file can both hold.

On a terminal (stdout and stderr both TTYs) a stage shows a tqdm bar. Anywhere else (``> log.txt``, a
batch scheduler, a pipe) bars are carriage-return redraws that pile up into one line of kilobytes, so
a stage prints one plain line to stderr when it ends (``crafting: 650 img in 4.6 s (140 img/s)``) and
pre-training one line per epoch (``ssl/callbacks.py:EpochLines``). ``CORRUPTENCODER_PROGRESS=bars`` or
``=lines`` forces either.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TextIO, TypeVar, cast

T = TypeVar("T")


def _tty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def bars_wanted() -> bool:
    """Whether progress may be drawn as bars (a terminal) rather than printed as lines (a file or pipe)."""
    mode = os.environ.get("CORRUPTENCODER_PROGRESS", "auto").strip().lower()
    if mode in ("bars", "bar"):
        return True
    if mode in ("lines", "line", "plain"):
        return False
    return _tty(sys.stdout) and _tty(sys.stderr)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Progress(Protocol):
    """What callers use of a progress display (tqdm has it; so has :class:`LineProgress`)."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> Any: ...


class LineProgress:
    """tqdm's interface without the bar: one line on stderr when the stage ends (nothing if it fails)."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True) -> None:
        self.iterable = iterable
        self.total = total if total is not None or iterable is None else _len(iterable)
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.n = 0
        self._t0 = time.perf_counter()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled or (self.total is not None and self.n < self.total):  # stopped early: its error says
            return
        secs = time.perf_counter() - self._t0
        rate = f" ({self.n / secs:.0f} {self.unit}/s)" if secs > 0 and self.n else ""
        print(f"{self.desc}: {self.n} {self.unit} in {secs:.1f} s{rate}", file=sys.stderr, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # a failed stage prints its error, not a completion line


def _len(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]  # sized or not: asked, not assumed
    except TypeError:
        return None


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = True) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, nothing when not ``enabled``.
    Iterate over it, or call ``update()`` and ``close()``."""
    if enabled and bars_wanted():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)
    return LineProgress(iterable, total, desc, unit, enabled=enabled)


def progress_bar(*, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                 leave: bool = True) -> Progress:
    """:func:`progress` for callers that ``update()`` by hand."""
    return cast(Progress, progress(None, total=total, desc=desc, unit=unit, enabled=enabled, leave=leave))
