"""LMDM checkpoints: one safetensors file whose JSON config travels inside it and beside it.

The config is stored twice on purpose: in the safetensors metadata, so a single file is self-describing,
and as `<name>.json`, so a person (or a tool without safetensors) can read and edit it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

CONFIG_METADATA_KEY = "lmdm_config"


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(path: str | Path, state_dict: dict[str, Tensor], config: dict) -> None:
    """Write `state_dict` to `path` (.safetensors) with `config` as metadata and as a sidecar .json."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"LMDM checkpoints are .safetensors files, got {path.name}")
    text = json.dumps(config, indent=1, sort_keys=True)
    seen: set[int] = set()
    tensors: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:  # safetensors refuses tensors that share memory (e.g. slices of one weight)
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        tensors[k] = v.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={CONFIG_METADATA_KEY: text})
    sidecar_path(path).write_text(text + "\n")


def load_checkpoint_config(path: str | Path) -> dict:
    """The config of a checkpoint: its embedded metadata, else the sidecar .json."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path.name} is not a readable safetensors file ({e})") from None
    if CONFIG_METADATA_KEY in meta:
        return json.loads(meta[CONFIG_METADATA_KEY])
    side = sidecar_path(path)
    if side.is_file():
        return json.loads(side.read_text())
    raise ValueError(
        f"{path.name} carries no LMDM config (no '{CONFIG_METADATA_KEY}' metadata, no {side.name})"
    )


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict]:
    """Read an LMDM checkpoint: (state_dict, config)."""
    path = Path(path)
    config = load_checkpoint_config(path)
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        names = f.keys()  # safe_open is not iterable
        state = {k: f.get_tensor(k) for k in names}
    return state, config


def save_optimizer(opt: torch.optim.Optimizer, path: str | Path) -> dict:
    """Write an optimizer's tensors to `path` (.safetensors); return the rest (param groups, scalars) as
    JSON-ready metadata for the run's progress file. `load_optimizer` inverts it."""
    from safetensors.torch import save_file as save_tensors

    state = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    meta: dict = {"param_groups": state["param_groups"], "state": {}}
    for i, st in state["state"].items():
        meta["state"][str(i)] = {}
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["state"][str(i)][k] = v
    save_tensors(tensors, str(path))
    return meta


def load_optimizer(opt: torch.optim.Optimizer, path: str | Path, meta: dict) -> None:
    """Restore what `save_optimizer` wrote (tensors from `path`, the rest from `meta`)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state: dict = {"param_groups": meta["param_groups"], "state": {}}
    for i, st in meta["state"].items():
        state["state"][int(i)] = dict(st)
    for key, v in tensors.items():
        i, _, name = key.partition(".")
        state["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(state)


def write_json_atomic(path: str | Path, obj, indent: int | None = None) -> None:
    """Write JSON through a temporary file and a rename, so a run stopped mid-write never leaves a torn
    progress file or dataset index behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    tmp.replace(path)
