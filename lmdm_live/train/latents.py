"""Pre-encode a dataset for LMDM training: VAE latents of the mix (and of the drums / the rest, for jamming,
and of the lead alone, for sketching a melody), MiniLM tokens of the captions, and the frame controls, in one
`LatentSet` file.

The latents are rescaled to unit variance over the set; the VAE written beside the set
(`<out>.vae.safetensors`) has that scale folded in, so it decodes what the LMDM generates. With a codec
file (the log-mel codec) the tokens are also centred, and the codec written beside the set has mean and
scale folded into its log-mel's shift and scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    data: str | Path | Sequence[str | Path],
    vae_path: str | Path,
    splits: tuple[str, ...] = ("train",),
    progress: Callable[[int, int], None] | None = None,
    out_vae: str | Path | None = None,
    normalise: bool = True,
) -> LatentSet:
    from ..model.bundle import load_codec
    from ..model.codec import is_codec_file

    folders = [Path(data)] if isinstance(data, str | Path) else [Path(d) for d in data]
    codec = load_codec(vae_path) if is_codec_file(vae_path) else None
    vae = None if codec is not None else load_vae(vae_path).eval()
    hop = codec.hop if codec is not None else vae.cfg.hop
    sample_rate = codec.sample_rate if codec is not None else None
    items: list[tuple[Path, dict]] = []  # (dataset folder, example) over every folder, one normalisation
    for folder in folders:
        index = load_index(folder)
        if hop != index["hop"]:
            raise ValueError(f"the codec's hop is {hop}, {folder} was made for hop {index['hop']}")
        if sample_rate is not None and sample_rate != index["sample_rate"]:
            raise ValueError(f"the codec runs at {sample_rate} Hz, {folder} is at {index['sample_rate']} Hz")
        items += [(folder, e) for e in index["examples"] if e["split"] in splits]
    # log-mel tokens are wide (512) and many: kept in float16, half the memory; training casts them back
    store = torch.float16 if codec is not None else torch.float32
    run = (lambda x: vae.encode(x)[0]) if vae is not None else (lambda x: codec.encode(x)[0])

    def encode(x: torch.Tensor) -> torch.Tensor:
        return run(x).to(store)

    examples = [e for _, e in items]
    if not examples:
        raise ValueError(f"no {'/'.join(splits)} examples in {', '.join(map(str, folders))}")
    text = MiniLMTextEncoder()
    latents, controls, drums, rest, lead, captions = [], [], [], [], [], []
    moments = torch.zeros(3, dtype=torch.float64)  # count, sum, sum of squares of the mixes' latents
    for k, (data, e) in enumerate(items):
        mix = _read(data / "audio" / f"{e['id']}.wav")
        z = encode(mix)
        n = z.shape[-1]
        z64 = z.double()
        moments += torch.stack(
            [torch.tensor(float(z64.numel()), dtype=torch.float64), z64.sum(), z64.square().sum()]
        )
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
            drums.append(encode(d))
            rest.append(encode(mix - d))
        else:
            drums.append(None)
            rest.append(None)
        l_path = data / "stems" / e["id"] / "lead.wav"
        lead.append(encode(_read(l_path)) if l_path.is_file() else None)
        latents.append(z)
        captions.append(e["caption"])
        if progress:
            progress(k + 1, len(examples))
    count, total, squares = moments.tolist()
    mean = total / count
    sigma = float((squares / count - mean**2) * count / max(count - 1, 1)) ** 0.5
    mu = mean if codec is not None else 0.0  # the VAE's latents are centred already
    if not normalise:  # the codec's tokens are normalised already: join their space as it is
        if codec is None:
            raise ValueError("keeping the scale is for a codec file (log-mel), not a VAE")
        mu, sigma = 0.0, 1.0

    def norm(z: torch.Tensor | None) -> torch.Tensor | None:
        return None if z is None else ((z.float() - mu) / sigma).to(store)

    latents = [norm(z) for z in latents]
    drums, rest, lead = [norm(z) for z in drums], [norm(z) for z in rest], [norm(z) for z in lead]
    tokens = _tokens(text, captions)
    has_lead = any(z is not None for z in lead)
    solo = _tokens(text, [solo_caption(e) for e in examples]) if has_lead else None
    if codec is not None:
        if out_vae is not None:
            codec.normalised(mu, sigma).save(out_vae)
    else:
        rescale_latents(vae, sigma)
        if out_vae is not None:
            save_checkpoint(
                out_vae,
                vae.state_dict(),
                {"vae": vae.cfg.to_dict(), "latent_sigma": sigma, "sample_rate": index["sample_rate"]},
            )
    styles = [str(e.get("labels", {}).get("style") or "") for e in examples]
    ls = LatentSet(latents, tokens, controls, drums, rest, lead if has_lead else None, solo, styles)
    ls.sigma = sigma  # type: ignore[attr-defined]
    return ls
