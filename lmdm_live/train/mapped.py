"""A safetensors file mapped into memory: its tensors are views of the file, read only where touched.

Data-parallel ranks on one host each train on a share of every batch. Loading a latent set copies all of it
into each process; mapping it lets the OS page in only the crops a rank reads, and keeps one copy of those
pages (the page cache) for all the ranks on the host.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from torch import Tensor

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def map_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of the file, as a view of a private (copy-on-write) mapping of it."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    storage = torch.UntypedStorage.from_file(str(path), False, size)
    raw = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,))
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        chunk = raw[8 + n + begin : 8 + n + end]
        if (8 + n + begin) % dtype.itemsize:  # not aligned for a view: this one tensor is copied
            chunk = chunk.clone()
        out[name] = chunk.view(dtype).view(info["shape"])
    return out
