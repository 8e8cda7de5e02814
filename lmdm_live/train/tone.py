"""Give a trained LMDM the tone channels (`model/tone.py`): its sketch handed over as the codec's own tokens.

The new channels come last in the extras and their input weights start at zero, so the widened model plays
exactly as before until training teaches it to read them: stage 1 goes on from what it learnt.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from ..model.bundle import LMDMModel
from ..model.sao import SAODiT
from .project import write_whole


@torch.no_grad()
def add_tone(model: LMDMModel) -> LMDMModel:
    """`model` with tone channels after its other extras, their input weights zero."""
    layout = model.layout
    if model.mel_codec is None:
        raise ValueError(f"model {model.name!r} has no log-mel codec: tone channels are its tokens")
    if not layout.sketch:
        raise ValueError(f"model {model.name!r} has no sketch channels to make tone channels from")
    if layout.tone:
        raise ValueError(f"model {model.name!r} has tone channels already")
    old_cfg = model.dit.cfg
    if old_cfg.extra_add_channels != layout.channels:
        raise ValueError(
            f"model {model.name!r} has {old_cfg.extra_add_channels - layout.channels} extra input channels "
            "its layout does not name: the tone channels would not come right after its extras"
        )
    cfg = dataclasses.replace(old_cfg, input_add_dim=old_cfg.input_add_dim + old_cfg.io_channels)
    sd = dict(model.dit.state_dict())
    w = sd["to_input_add_embed.weight"]
    sd["to_input_add_embed.weight"] = torch.cat([w, w.new_zeros(w.shape[0], old_cfg.io_channels)], dim=1)
    seconds = model.net.seconds
    net = SAODiT(cfg, seconds.output_dim, seconds.min_val, seconds.max_val)
    net.dit.load_state_dict(sd, strict=True)
    net.seconds.load_state_dict(seconds.state_dict(), strict=True)
    extras = {**(model.extras or {}), "tone": True}
    return dataclasses.replace(model, net=net.eval().requires_grad_(False), extras=extras)


def run_add_tone(model: Path, out: Path) -> LMDMModel:
    """`train tone`: `out` is `model` with tone channels (written whole, then renamed)."""
    widened = add_tone(LMDMModel.load(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_whole(widened.save, out)
    return widened


def add_tone_parser(tsub) -> None:
    """`lmdm-live train tone --model M --out W`."""
    tn = tsub.add_parser(
        "tone",
        help="give a model tone channels: its sketch as the tokens of a plain tone (inputs start at zero)",
    )
    tn.add_argument("--model", type=Path, required=True, help="an LMDM on a log-mel codec, with a sketch")
    tn.add_argument("--out", type=Path, required=True, help="the widened model file (.safetensors)")


def run_tone_command(args) -> int:
    if args.out.exists():
        print(f"error: {args.out} exists; give another --out", file=sys.stderr)
        return 2
    m = run_add_tone(args.model, args.out)
    print(f"{args.out}: {args.model} with {m.dit.cfg.io_channels} tone channels (zero until trained)")
    return 0
