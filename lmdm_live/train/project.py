"""Narrow a log-mel token space to its leading principal directions, and carry a model and its data along.

The log-mel codec's tokens are 4 frames x 128 bands = 512 strongly correlated values; 128 principal
directions hold about 99 % of their variance. `principal_basis` finds them over a set's tokens (the mixes,
and the stems the DiT is fed or made to play), `project_set` re-expresses a latent set in them, and
`project_model` maps a trained LMDM onto them so training goes on from what it learnt: the input layers take
basis z for x, the output layers give basis^T v, both exactly for tokens inside the subspace. The codec
decodes basis z + offset (the part of the mean the basis leaves out), so nothing else changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..model.bundle import LMDMModel, load_codec
from ..model.checkpoint import sidecar_path
from ..model.codec import MelCodec
from ..model.extras import ExtrasLayout
from ..model.sao import SAODiT
from .latent_set import LatentSet


def _sampled_tokens(sets: list[LatentSet], per_set: int, seed: int) -> Tensor:
    """(N, D) tokens drawn from whole clips of every set: mixes, and the stems where the set has them."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for ls in sets:
        for group in (ls.latents, ls.lead, ls.drums, ls.rest):
            clips = [z for z in group or [] if z is not None]
            if not clips:
                continue
            pick = torch.randperm(len(clips), generator=g)[:per_set]
            rows += [clips[int(i)].float().T for i in pick]
    if not rows:
        raise ValueError("no tokens to find principal directions in")
    return torch.cat(rows)


def principal_basis(
    sets: list[LatentSet], dim: int, per_set: int = 300, seed: int = 0, frames: int = 1
) -> tuple[Tensor, Tensor, float]:
    """basis (D, dim) orthonormal, offset (D,) and the share of the tokens' variance the basis keeps, over up
    to `per_set` clips of each kind in each set.

    With `frames` = the codec's frames per token, one basis of dim / frames directions is found over single
    frames and applied to each frame of a token alike (a block-diagonal basis). A basis over whole tokens
    keeps more variance for the width, but what it drops is smoothed within a token and not across tokens:
    decoded, that is a small jump at every token boundary, a 46 ms grid a tempo estimate can lock onto.
    Frame by frame, the error is the same for every frame and leaves no grid."""
    tokens = _sampled_tokens(sets, per_set, seed).double()
    width = tokens.shape[1]
    if frames < 1 or width % frames or dim % frames or not 0 < dim <= width:
        raise ValueError(f"dim must be 1..{width} and both divisible by frames ({frames}), got {dim}")
    x = tokens.reshape(-1, width // frames)  # a token is its frames side by side, frame-major
    centred = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred / len(x))
    one = vectors[:, values.argsort(descending=True)[: dim // frames]]
    one = one * torch.where(one.sum(0) < 0, -1.0, 1.0)  # one sign convention, so runs agree
    basis = torch.block_diag(*[one] * frames)
    mean = tokens.mean(0)
    offset = mean - basis @ (basis.T @ mean)
    token_centred = tokens - mean
    kept = float((token_centred @ basis).square().sum() / token_centred.square().sum())
    return basis.float(), offset.float(), kept


def project_set(ls: LatentSet, basis: Tensor) -> LatentSet:
    """The same examples with every token x replaced by basis^T x (stored as the set stores tokens)."""

    def one(z: Tensor | None) -> Tensor | None:
        return None if z is None else (basis.T @ z.float()).to(z.dtype)

    def many(group: list[Tensor | None] | None) -> list | None:
        return None if group is None else [one(z) for z in group]

    return dataclasses.replace(
        ls, latents=many(ls.latents), drums=many(ls.drums), rest=many(ls.rest), lead=many(ls.lead)
    )


@torch.no_grad()
def project_model(model: LMDMModel, codec: MelCodec) -> LMDMModel:
    """`model` on `codec`'s projected tokens: the same network, its token-facing weights mapped through the
    basis (the 1x1 pre/post convolutions folded into them and restarted at zero)."""
    if model.mel_codec is None or model.mel_codec.cfg.project:
        raise ValueError("projecting needs a model on the plain log-mel codec")
    if not codec.cfg.project or codec.cfg.mel != model.mel_codec.cfg.mel:
        raise ValueError("the projected codec must be the model's own log-mel, projected")
    basis = codec.basis.double()
    old_cfg = model.dit.cfg
    full, k = old_cfg.io_channels, codec.dim
    layout = ExtrasLayout.from_config(model.extras, full)
    new_layout = ExtrasLayout.from_config(model.extras, k)
    cfg = dataclasses.replace(
        old_cfg,
        io_channels=k,
        input_add_dim=1 + k + new_layout.channels if old_cfg.input_add_dim else 0,
    )
    sd = {name: v.double() for name, v in model.dit.state_dict().items()}
    eye = torch.eye(full, dtype=torch.float64)
    pre = eye + sd.pop("preprocess_conv.weight")[..., 0]
    post = eye + sd.pop("postprocess_conv.weight")[..., 0]
    sd["transformer.project_in.weight"] = sd["transformer.project_in.weight"] @ pre @ basis
    sd["transformer.project_out.weight"] = basis.T @ post @ sd["transformer.project_out.weight"]
    sd["preprocess_conv.weight"] = torch.zeros(k, k, 1, dtype=torch.float64)
    sd["postprocess_conv.weight"] = torch.zeros(k, k, 1, dtype=torch.float64)
    if old_cfg.input_add_dim:
        w = sd["to_input_add_embed.weight"]
        extras = w[:, 1 + full :]
        parts = [w[:, :1], w[:, 1 : 1 + full] @ basis]
        for name, sl in layout.offsets().items():
            part = extras[:, sl]
            if name == "accomp" and part.shape[1]:  # [on; the accompaniment's tokens]
                part = torch.cat([part[:, :1], part[:, 1:] @ basis], dim=1)
            parts.append(part)
        sd["to_input_add_embed.weight"] = torch.cat(parts, dim=1)
    seconds = model.net.seconds
    net = SAODiT(cfg, seconds.output_dim, seconds.min_val, seconds.max_val)
    net.dit.load_state_dict({name: v.float() for name, v in sd.items()}, strict=True)
    net.seconds.load_state_dict(seconds.state_dict(), strict=True)
    return dataclasses.replace(model, net=net.eval().requires_grad_(False), mel_codec=codec)


def run_project(
    data: Sequence[Path],
    codec_file: Path,
    dim: int,
    out: Path,
    model: Path | None = None,
    log: Callable[[str], None] = print,
    per_frame: bool = False,
) -> MelCodec:
    """`train project`: out/codec.safetensors, out/<set name> per set, out/model.safetensors with `model`.

    Resumable: a codec already in `out` keeps its basis, and what is already written is kept. Each file is
    written whole under another name and then renamed, so a stopped run leaves no half file."""
    codec_path = out / "codec.safetensors"
    if codec_path.is_file():
        codec = load_codec(codec_path)
        if codec.dim != dim:
            raise ValueError(f"{codec_path} keeps {codec.dim} directions, not {dim}")
        g = codec.cfg.mel.group
        one = codec.basis[: codec.basis.shape[0] // g, : dim // g]
        if per_frame != (dim % g == 0 and torch.equal(codec.basis, torch.block_diag(*[one] * g))):
            raise ValueError(f"{codec_path} was made {'without' if per_frame else 'with'} --per-frame")
    else:
        base = load_codec(codec_file)
        if not isinstance(base, MelCodec):
            raise ValueError(f"{codec_file} is not a log-mel codec")
        frames = base.cfg.mel.group if per_frame else 1
        sets = [LatentSet.load(d, mmap=True) for d in data]
        basis, offset, kept = principal_basis(sets, dim, frames=frames)
        codec = base.projected(basis, offset)
        out.mkdir(parents=True, exist_ok=True)
        write_whole(codec.save, codec_path)
        how = f" ({dim // frames} a frame)" if frames > 1 else ""
        log(f"{codec_path}: {dim} directions{how} hold {kept:.1%} of the variance")
    for d in data:
        target = out / Path(d).name
        if not target.is_file():
            write_whole(project_set(LatentSet.load(d), codec.basis).save, target)
            log(f"{target}: projected")
    model_path = out / "model.safetensors"
    if model is not None and not model_path.is_file():
        write_whole(project_model(LMDMModel.load(model), codec).save, model_path)
        log(f"{model_path}: {model} on the projected tokens")
    return codec


def write_whole(save: Callable[[Path], None], path: Path) -> None:
    """save(path) under a temporary name, then renamed (with a checkpoint's .json beside it, if it wrote one)."""
    part = path.with_name(path.stem + ".part.safetensors")
    save(part)
    if sidecar_path(part).is_file():
        sidecar_path(part).replace(sidecar_path(path))
    part.replace(path)
