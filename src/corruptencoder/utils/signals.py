"""Signals: SIGINT / SIGTERM as one exception the command line maps to 130 / 143, cleanup that a second
signal cannot cut short, and worker processes that die with their parent.

* :func:`interrupts_raise` (the CLI's ``main()``): SIGINT and SIGTERM raise :class:`Interrupted` in the
  main thread, so every ``finally`` and ``except BaseException`` cleans up (temp folders, pool workers)
  and the exit status says what happened. Python's own KeyboardInterrupt is not used because Lightning
  turns it into ``sys.exit(1)``, and SIGTERM's default is to die without cleaning up.
* :func:`signals_deferred`: a block (removing a temp folder, stopping workers) that a signal arriving
  meanwhile does not interrupt; the signal is delivered when the block ends.
* :func:`die_with_parent`: in a worker process, SIGTERM when the parent dies (Linux ``prctl``) plus a
  watchdog thread for other systems, so a killed ``craft`` never leaves workers holding the caller's
  pipes open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

from corruptencoder.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (they stay pending, then are delivered)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Call first thing in a worker process: the worker ends when ``parent_pid`` does.

    SIGTERM gets its default action (the parent stops workers with it) and SIGINT is ignored (a Ctrl-C
    on a terminal reaches the whole process group; the parent decides). On Linux the kernel sends
    SIGTERM when the parent dies, even by SIGKILL; everywhere, a daemon thread checks the parent every
    ``poll_seconds`` and exits the worker when it is gone.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), to tell a live owner from
    a new process that reused its id; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may contain spaces
    return fields[19] if len(fields) > 19 else None
