"""A process pool for pure render jobs (crafting poisons, generating a world): same bytes with 1 or N workers.

Jobs carry every random value they need (drawn in the parent), so the output never depends on the number
of workers. On an exception or a signal the workers are stopped *before* the caller's temp folder is
removed (a worker still rendering would write into it again), and workers die with their parent even when
it is killed with SIGKILL (:func:`corruptencoder.utils.signals.die_with_parent`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
from typing import Any, TypeVar

from corruptencoder.utils.progress import progress_bar
from corruptencoder.utils.signals import die_with_parent, signals_deferred

J = TypeVar("J")
R = TypeVar("R")


def max_workers() -> int:
    """More processes than this only add memory and start-up time (the output never depends on it)."""
    return max(1, 4 * (os.cpu_count() or 1))


def default_workers() -> int:
    """One worker per core: render jobs are CPU-bound."""
    return max(1, os.cpu_count() or 1)


def process_map(fn: Callable[[J], R], jobs: Sequence[J], *, workers: int, initializer: Callable[..., None],
                initargs: tuple[Any, ...] = (), desc: str = "rendering", unit: str = "img",
                progress: bool = True) -> Iterator[R]:
    """``fn(job)`` for every job, in order, in up to ``workers`` processes (1: here, no pool).

    ``initializer(*initargs)`` runs once in each worker (or here) before its first job; ``fn`` finds what
    it set up in module state. A progress bar (or one log line) counts the jobs."""
    bar = progress_bar(total=len(jobs), desc=desc, unit=unit, enabled=progress)
    workers = min(workers, len(jobs), max_workers())
    try:
        if workers <= 1:
            initializer(*initargs)
            for job in jobs:
                yield fn(job)
                bar.update()
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_worker,
                                     initargs=(initializer, initargs, os.getpid())) as pool:
                try:
                    for item in pool.map(fn, jobs, chunksize=chunk):
                        yield item
                        bar.update()
                except BaseException:
                    stop_workers(pool)
                    raise
    finally:
        bar.close()  # a bar ends its line; a log line is printed only for a finished stage


def _pool_worker(initializer: Callable[..., None], initargs: tuple[Any, ...], parent: int) -> None:
    die_with_parent(parent)  # never outlive the parent, leave Ctrl-C to it
    initializer(*initargs)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's processes now (SIGTERM, then SIGKILL), before their temp folder is removed: a
    worker still rendering would otherwise write into it again after the removal."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # the executor's own, by pid
    manager = getattr(pool, "_executor_manager_thread", None)
    with signals_deferred(), _quiet_broken_pool(manager):
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 5.0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        if manager is not None:
            manager.join(max(1.0, deadline - time.monotonic()))
        queue = getattr(pool, "_call_queue", None)  # jobs no worker will read: never wait for them at exit
        if queue is not None:
            with contextlib.suppress(Exception):
                queue.cancel_join_thread()


@contextlib.contextmanager
def _quiet_broken_pool(manager: threading.Thread | None) -> Iterator[None]:
    """Python 3.11's executor thread, finding its workers gone, sets an exception on the futures that map()
    already cancelled and dies printing InvalidStateError (fixed in later Pythons); that thread's death is
    the intended end here, so its traceback is not shown."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is manager and args.exc_type is InvalidStateError:
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
