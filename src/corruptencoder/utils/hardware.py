"""What a run's numbers depend on beyond its config and seed: library versions and the chips' kernels.

Training here is bit-exact from one run to the next on one machine, but not across machines: the CPU's
instruction set picks other kernels (another rounding), and a MoCo run diverges from there like another seed
(measured: ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 host moves weights by up to 2.3
after two epochs). ``run.json`` and ``results.json`` record this so a rerun that differs can be told apart
from a regression.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

_KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "CUBLAS_WORKSPACE_CONFIG")


@cache
def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """Versions, CPU model and kernel capability, threads, and the GPU (if one is visible)."""
    import torch
    import torchvision

    out: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        # the environment variables that change kernels (and so the trained weights) when set
        "kernel_env": {k: os.environ[k] for k in _KERNEL_ENV if k in os.environ},
    }
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_count"] = torch.cuda.device_count()
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]  # untyped in torch
    return out


class PeakMemory:
    """The peak resident memory of this process over a block, and the GPU's peak allocation when one is used.

    Linux keeps one high-water mark per process (``VmHWM``); writing ``5`` to ``/proc/self/clear_refs`` resets
    it, so a stage that runs after another in the same process (an experiment's arms) reports its own peak.
    Where the reset is refused the mark is the process's peak so far (``reset`` says which). Loader worker
    processes are not counted: they hold the decoded-image cache's pages shared with this one.
    """

    def __init__(self) -> None:
        self.reset = _reset_peak_rss()
        cuda = _cuda_in_use()  # not initialised yet: the stage's own allocations are all the peak counts
        if cuda is not None:
            cuda.reset_peak_memory_stats()

    def read(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": _peak_rss_mb(), "peak_rss_since_stage_start": self.reset}
        cuda = _cuda_in_use()
        if cuda is not None:
            out["peak_gpu_mb"] = round(cuda.max_memory_allocated() / 2**20, 1)
        return out


def _cuda_in_use() -> Any:
    """``torch.cuda`` where this process has initialised a GPU, else None (without initialising one)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            return torch.cuda
    except (ImportError, RuntimeError):
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    """``VmHWM`` of ``/proc/self/status`` in MiB, else ``getrusage``'s maximum (kB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)
    except (ImportError, OSError):
        return None
