"""Which dtype the DiT runs in. Where the CPU multiplies bfloat16 natively (AMX or AVX512-BF16), bfloat16 cuts
the DiT's time per block by about a third (97 ms against 138 ms for the 16 kHz model on one core) and
scores the same as float32 on the evaluation; elsewhere it would be emulated and slower. There "auto" picks
"int8": the transformer's linears hold int8 weights (`model/int8.py`), since a cached step at a few rows
is bound by reading its weights. On a GPU "auto" is float32 unless it has bfloat16. The codec always stays
float32."""

from __future__ import annotations

import torch

from . import int8

DTYPES = ("auto", "float32", "bfloat16", "int8")
INT8 = torch.qint8
"""What `resolve_dtype` returns for "int8": a float32 model whose transformer linears run int8."""


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` multiplies bfloat16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)  # private in torch, hence the fallback below
        if check is not None and check():
            return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype that `name` (one of DTYPES) means on `device`; INT8 for "int8"."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        if native_bf16(device):
            return torch.bfloat16
        return INT8 if torch.device(device).type == "cpu" and int8.available() else torch.float32
    if name == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError("dtype int8 runs on the CPU only; on a GPU use float32 or bfloat16")
        return INT8
    return getattr(torch, name)


def dtype_name(dtype: torch.dtype) -> str:
    return "int8" if dtype == INT8 else str(dtype).removeprefix("torch.")


def model_dtype_name(net: torch.nn.Module) -> str:
    """The dtype a loaded network runs in, as `resolve_dtype` names it."""
    return "int8" if int8.is_quantized(net) else dtype_name(next(net.parameters()).dtype)
