"""A stage-1 run's resume point, small enough to commit: a machine that starts afresh loses its run folders,
and hours of CPU training with them.

The DiT's weights are kept in float16: half the bytes, and a rounding error (2^-11 relative) well under one
Adam step at the rates stage 1 trains with. The codec's tensors stay as they are. The optimizer's moments
(twice the weights) are not kept; a run resumed from here restarts them and warms its learning rate up
again (`Stage1Trainer.resume`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..model.bundle import CODEC_PREFIX, VAE_PREFIX
from ..model.checkpoint import load_checkpoint, save_checkpoint, write_json_atomic

KEEP_DTYPE = torch.float16


def keep_run(run: str | Path, dest: str | Path) -> dict:
    """Write `run`'s model and progress (without the optimizer) into `dest`; return the kept progress."""
    run, dest = Path(run), Path(dest)
    progress_file = run / "progress.json"
    if not progress_file.is_file():
        raise FileNotFoundError(f"{run} holds no training run (no progress.json)")
    progress = json.loads(progress_file.read_text())
    state, config = load_checkpoint(run / "model.safetensors")
    kept = {
        k: v.to(KEEP_DTYPE)
        if v.dtype == torch.float32 and not k.startswith((VAE_PREFIX, CODEC_PREFIX))
        else v
        for k, v in state.items()
    }
    dest.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest / "model.safetensors", kept, config)
    progress.pop("optimizer", None)
    progress["kept"] = {"weights": str(KEEP_DTYPE).removeprefix("torch."), "optimizer": "restarts"}
    write_json_atomic(dest / "progress.json", progress)
    return progress
