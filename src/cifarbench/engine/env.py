"""Device choice and the environment record that every run stores."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys

import torch

from cifarbench.errors import CifarbenchError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CifarbenchError(f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CifarbenchError("--device mps: MPS is not available on this machine")
    return torch.device(name)


def _cpuinfo() -> str | None:
    """/proc/cpuinfo's text (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return None


def cpu_has_bf16() -> bool:
    """Native bf16 matmul support; without it bf16 autocast on the CPU is slower than fp32."""
    flags = _cpuinfo()
    if flags is None:
        return platform.machine().lower() in ("arm64", "aarch64")  # Apple silicon and recent ARM servers
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", " bf16"))


def cpu_has_avx512_bf16() -> bool:
    """x86 AVX-512 BF16 (AMD Zen 4, Intel Cooper Lake and later): where engine/cpu_conv.py measured its 2x2 maps."""
    return "avx512_bf16" in (_cpuinfo() or "")


def cpu_avx2_only() -> bool:
    """x86 AVX2 without AVX-512 (AMD Zen 2/3, most laptops): no native bf16, so runs train in fp32, and
    engine/cpu_conv.py measured its fp32 2x2 maps here."""
    return cpu_isa() == "avx2"


def cpu_has_amx() -> bool:
    """Intel AMX tiles with bf16 (Sapphire Rapids and later): where engine/cpu_conv.py's matmul convolutions pay most."""
    return "amx_bf16" in (_cpuinfo() or "")


def cpu_isa() -> str | None:
    """The widest x86 vector/matrix extension this CPU has, as /proc/cpuinfo names it (amx_bf16, avx512_bf16,
    avx512f, avx2), or None: the results record it because the CPU kernels, and so the speeds, differ by it."""
    flags = set((_cpuinfo() or "").split())
    return next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags), None)


def amp_unsupported(device: torch.device) -> str | None:
    """Why bf16 autocast does not pay on ``device`` (one line), or None where it does."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type == "cpu" and not cpu_has_bf16():
        return "this CPU has no native bf16 (avx512_bf16/amx_bf16); bf16 autocast would be slower than fp32"
    return None


def check_amp(device: torch.device) -> None:
    reason = amp_unsupported(device)
    if reason:
        raise CifarbenchError(f"--amp: {reason}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    for line in (_cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    import torchvision

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_amx": device.type == "cpu" and cpu_has_amx(),
        "cpu_isa": cpu_isa() if device.type == "cpu" else None,
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
