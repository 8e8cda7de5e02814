"""Pre-encode a dataset for LMDM training: VAE latents of the mix (and of the drums / the rest, for jamming,
and of the lead alone, for sketching a melody), MiniLM tokens of the captions, and the frame controls, in one
`LatentSet` file.

The latents are rescaled to unit variance over the set; the VAE written beside the set
(`<out>.vae.safetensors`) has that scale folded in, so it decodes what the LMDM generates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..model.checkpoint import save_checkpoint
from ..model.conditioners import MiniLMTextEncoder
from .autoencoder import load_vae, rescale_latents
from .dataset import SKETCH_KEYS, load_index, solo_caption
from .stage1 import LatentSet

CONTROL_KEYS = ("bpm", "beat_phase", "bar_phase", *SKETCH_KEYS)


def _tokens(text: MiniLMTextEncoder, captions: list[str]) -> torch.Tensor:
    """(N, S, D) caption tokens, padding zeroed."""
    out = []
    for i in range(0, len(captions), 32):
        tk, mask = text.encode(captions[i : i + 32])
        out.append(tk.float() * mask[..., None].float())
    return torch.cat(out)


def _read(path: Path) -> torch.Tensor:
    return torch.from_numpy(sf.read(path, dtype="float32")[0])[None, None]


@torch.no_grad()
def encode_dataset(
    data: str | Path,
    vae_path: str | Path,
    splits: tuple[str, ...] = ("train",),
    progress: Callable[[int, int], None] | None = None,
    out_vae: str | Path | None = None,
) -> LatentSet:
    data = Path(data)
    index = load_index(data)
    vae = load_vae(vae_path).eval()
    if vae.cfg.hop != index["hop"]:
        raise ValueError(f"the VAE's hop is {vae.cfg.hop}, the dataset was made for hop {index['hop']}")
    examples = [e for e in index["examples"] if e["split"] in splits]
    if not examples:
        raise ValueError(f"no {'/'.join(splits)} examples in {data}")
    text = MiniLMTextEncoder()
    latents, controls, drums, rest, lead, captions = [], [], [], [], [], []
    for k, e in enumerate(examples):
        mix = _read(data / "audio" / f"{e['id']}.wav")
        z = vae.encode(mix)[0]
        n = z.shape[-1]
        with np.load(data / "controls" / f"{e['id']}.npz") as c:
            missing = [key for key in CONTROL_KEYS if key not in c]
            if missing:
                raise ValueError(
                    f"example {e['id']} lacks controls {missing}: run `train data` again to add them"
                )
            controls.append(torch.stack([torch.from_numpy(c[key][:n]).float() for key in CONTROL_KEYS]))
        d_path = data / "stems" / e["id"] / "drums.wav"
        if d_path.is_file():
            d = _read(d_path)
            drums.append(vae.encode(d)[0])
            rest.append(vae.encode(mix - d)[0])
        else:
            drums.append(None)
            rest.append(None)
        l_path = data / "stems" / e["id"] / "lead.wav"
        lead.append(vae.encode(_read(l_path))[0] if l_path.is_file() else None)
        latents.append(z)
        captions.append(e["caption"])
        if progress:
            progress(k + 1, len(examples))
    sigma = float(torch.cat([z.flatten() for z in latents]).std())
    latents = [z / sigma for z in latents]
    drums = [None if z is None else z / sigma for z in drums]
    rest = [None if z is None else z / sigma for z in rest]
    lead = [None if z is None else z / sigma for z in lead]
    tokens = _tokens(text, captions)
    has_lead = any(z is not None for z in lead)
    solo = _tokens(text, [solo_caption(e) for e in examples]) if has_lead else None
    rescale_latents(vae, sigma)
    if out_vae is not None:
        save_checkpoint(
            out_vae,
            vae.state_dict(),
            {"vae": vae.cfg.to_dict(), "latent_sigma": sigma, "sample_rate": index["sample_rate"]},
        )
    ls = LatentSet(latents, tokens, controls, drums, rest, lead if has_lead else None, solo)
    ls.sigma = sigma  # type: ignore[attr-defined]
    return ls
