"""Where a run computes and in what precision: the device, bf16 autocast, a label for records."""

import ctypes
import functools
import os
import platform
from pathlib import Path

import torch

from lab.errors import LabError


def resolve_device(name: str) -> torch.device:
    """The device: `auto` = CUDA when present; `cuda` = the GPU of this process's local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # under torchrun each rank takes its own GPU
        name = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabError(f"device {name!r} asked for, but CUDA is not available")
    return device


@functools.cache  # read once: autocast asks for the flags at every training step
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags (Linux's /proc/cpuinfo; elsewhere no flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("flags") or fields.get("Features") or ""
    name = fields.get("model name", platform.machine())
    # virtual machines name an Ice Lake and a Sapphire Rapids Xeon alike; the numbers differ
    if "cpu family" in fields and "model" in fields:
        name += f" family {fields['cpu family']} model {fields['model']}"
    return name, frozenset(flags.split())


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse; returns whether it could (glibc only).

    By default glibc serves every block over 32 MB (a batch's activations) by a fresh mmap and
    hands it back on free, so each training step page-faults its activations in again. On 2
    AVX2-only cores, resnet18_s2's fp32 steps on batches of 256 ran at 80-85 img/s at 64 px
    and 273-298 at 32 px so, at 84-97 and 299-303 with this set, with a fifth of the system
    time (benchmarks/train.py --glibc-default compares). Peak memory is held, not returned.
    Process-wide.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1))


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 math is native here: CUDA, or a CPU with AVX512-BF16, AMX or Arm BF16.

    Without it CPU autocast emulates bf16 and runs slower than fp32, so the lab stays in fp32.
    """
    if device.type == "cuda":
        return True
    return bool(cpu_info()[1] & {"avx512_bf16", "amx_bf16", "bf16"})


def precision(device: torch.device, amp: bool) -> str:
    """The precision a run computes in: bf16 (autocast) or fp32."""
    return "bf16" if amp and native_bf16(device) else "fp32"


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast where bf16 is native (see native_bf16); fp32 elsewhere."""
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled and native_bf16(device))


def device_label(device: torch.device) -> str:
    """A label for the device, e.g. `NVIDIA H200` or `AMD EPYC family 25 model 17 (2 threads)`."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    # CPUs that share a model name may differ in bf16 (and so in speed): say which this one is
    name, flags = cpu_info()
    bf16 = ", native bf16" if native_bf16(device) else ""
    if bf16 and "amx_bf16" in flags:
        bf16 += " with AMX"
    return f"{name} ({torch.get_num_threads()} threads{bf16})"
