"""Dynamic int8 for the DiT's transformer linears, on CPU.

A cached denoising step multiplies a few rows (one block's tokens) by every weight of the transformer, so
on a CPU without native bfloat16 its time goes to reading float32 weights, not to arithmetic. Holding
those weights as int8 (one scale per output channel; the activations quantised on the fly, one scale per
row, see `linear`) reads a quarter of the bytes. The embeddings, the input and output projections and
the context path stay float32: they are a small share of the weights and feed the velocity or the cache
directly. The float32 weights stay too, for the paths that slice them and for training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ATTR = "int8_packed"


def available() -> bool:
    """Whether this torch build has the fbgemm dynamic linear (x86 CPU builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


@dataclass(frozen=True)
class Packed:
    weight: object  # fbgemm's packed int8 weight, no bias
    bias: Tensor | None


def pack(weight: Tensor, bias: Tensor | None) -> Packed:
    """A float32 (out, in) weight as fbgemm's packed int8, one symmetric scale per output channel."""
    w = weight.detach().float().cpu()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # torch 2.13 (the pinned version) deprecates quantised tensors
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
    b = None if bias is None else bias.detach().float().cpu()
    return Packed(torch.ops.quantized.linear_prepack(q, None), b)


def quantize(module: nn.Module) -> int:
    """Give every nn.Linear under `module` an int8 copy of its weight; returns how many."""
    if not available():
        raise RuntimeError("int8 needs torch's fbgemm engine (an x86 CPU build)")
    torch.backends.quantized.engine = "fbgemm"
    n = 0
    for m in module.modules():
        if isinstance(m, nn.Linear):
            setattr(m, ATTR, pack(m.weight, m.bias))  # not a parameter: stays out of state_dict
            n += 1
    return n


def is_quantized(module: nn.Module) -> bool:
    return any(ATTR in m.__dict__ for m in module.modules())


def linear(x: Tensor, packed: Packed) -> Tensor:
    """x (..., in) float32 through a packed int8 linear.

    fbgemm quantises the activations with one scale for the whole call, so one loud row (the timestep token)
    would coarsen every other. Each row is brought to unit peak first and its output scaled back: per-token
    scales, for two small elementwise ops. reduce_range keeps AVX2's 16-bit sums from saturating.
    """
    flat = x.reshape(-1, x.shape[-1])
    peak = flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    y = torch.ops.quantized.linear_dynamic((flat / peak).contiguous(), packed.weight, True) * peak
    if packed.bias is not None:
        y = y + packed.bias
    return y.view(*x.shape[:-1], -1)
