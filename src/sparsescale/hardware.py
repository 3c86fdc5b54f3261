"""Accelerator peaks and model-FLOPs utilisation (MFU), the GPU efficiency a run reports.

MFU = achieved model FLOPs per second / (peak FLOPs per second x devices), with model FLOPs
from :func:`sparsescale.model.flops_per_token` on the *dense* shapes: masked weights are
still multiplied by dense kernels, so a sparse run's hardware work is the dense model's.
"""

from __future__ import annotations

# Dense (no structured sparsity) bf16 tensor-core peaks from the vendors' datasheets, matched
# as substrings of torch.cuda.get_device_name(); the first match wins, so variants come first.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def peak_flops(device_name: str, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: ``override`` (training.peak_flops) if given, else the
    datasheet value of a known CUDA device, else None (CPUs have no single peak worth quoting)."""
    if override is not None:
        return float(override)
    if not device_name.startswith("cuda:"):
        return None
    entry = datasheet_entry(device_name)
    return entry[1] if entry else None


def datasheet_entry(device_name: str) -> tuple[str, float] | None:
    """(table name, peak FLOP/s) of the first table entry found in ``device_name`` (any case):
    "H100", "NVIDIA H100 80GB HBM3" and "cuda:NVIDIA H100 80GB HBM3" all give the H100 SXM."""
    lowered = device_name.lower()
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() in lowered:
            return name, peak
    return None


def mfu(model_flops_per_s: float, peak: float | None, devices: int = 1) -> float | None:
    """Model-FLOPs utilisation across ``devices`` devices of ``peak`` FLOP/s each."""
    if peak is None or model_flops_per_s <= 0:
        return None
    return model_flops_per_s / (peak * devices)
