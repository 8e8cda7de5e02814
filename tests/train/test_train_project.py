"""Narrowing the log-mel tokens to principal directions: the codec, the sets and the model carried along."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmdm_live.model.bundle import LMDMModel, load_codec
from lmdm_live.model.codec import MelCodec, MelCodecConfig, decode_whole
from lmdm_live.model.lmdm import LMDM, Conditioning, LMDMConfig
from lmdm_live.train.latent_set import LatentSet
from lmdm_live.train.project import principal_basis, project_model, project_set, run_project

WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=2)


def low_rank_set(rank: int = 6, clips: int = 12, seed: int = 0) -> LatentSet:
    """Tokens on a `rank`-dimensional plane (plus a little noise) away from the origin."""
    g = torch.Generator().manual_seed(seed)
    plane = torch.linalg.qr(torch.randn(512, rank, generator=g))[0]
    mean = torch.randn(512, 1, generator=g)
    latents = [
        (plane @ torch.randn(rank, 40, generator=g) * 3 + mean) + 0.01 * torch.randn(512, 40, generator=g)
        for _ in range(clips)
    ]
    return LatentSet(latents, torch.zeros(clips, 3, 384))


def test_basis_finds_the_plane_and_the_codec_decodes_its_tokens_back():
    ls = low_rank_set()
    basis, offset, kept = principal_basis([ls], 6)
    assert torch.allclose(basis.T @ basis, torch.eye(6), atol=1e-5)
    assert kept > 0.999 and principal_basis([ls], 5)[2] < 0.95
    codec = MelCodec(MelCodecConfig()).projected(basis, offset)
    assert codec.dim == 6
    x = ls.latents[0]
    z = project_set(ls, basis).latents[0]
    assert z.shape == (6, 40)
    # basis z + offset is the token again: the plane's part through z, the mean's remainder through offset
    assert float((codec.full_tokens(z[None])[0] - x).abs().max()) < 0.1
    # directions left out do not come back
    narrow = MelCodec(MelCodecConfig()).projected(basis[:, :3], offset)
    assert float((narrow.full_tokens(z[None, :3])[0] - x).abs().max()) > 1.0


def test_a_per_frame_basis_treats_every_frame_of_a_token_alike():
    """Frame by frame: the same directions for each of a token's four frames, so decoding smooths every frame
    the same way and leaves no jump at token boundaries (a whole-token basis leaves one: a 46 ms grid)."""
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(128, 3, generator=g) @ torch.randn(3, 4 * 30 * 8, generator=g)  # rank-3 spectra
    latents = [f.reshape(128, 30, 4).permute(2, 0, 1).reshape(512, 30) for f in frames.split(120, dim=1)]
    ls = LatentSet(latents, torch.zeros(len(latents), 3, 384))
    basis, _, kept = principal_basis([ls], 12, frames=4)
    assert kept > 0.999
    one = basis[:128, :3]
    assert torch.equal(basis, torch.block_diag(one, one, one, one))
    with pytest.raises(ValueError, match="divisible"):
        principal_basis([ls], 10, frames=4)


def test_a_full_basis_plays_exactly_as_the_plain_codec(tmp_path):
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.standard_normal(44100 // 2).astype(np.float32) * 0.1)[None, None]
    plain = MelCodec(MelCodecConfig()).eval()
    q = torch.linalg.qr(torch.randn(512, 512, generator=torch.Generator().manual_seed(1)))[0]
    full = plain.projected(q, torch.zeros(512))
    full.save(tmp_path / "codec.safetensors")
    loaded = load_codec(tmp_path / "codec.safetensors")
    assert loaded.dim == 512 and loaded.cfg.project == 512
    tokens = loaded.encode(audio)
    assert not torch.allclose(tokens, plain.encode(audio), atol=1e-2)  # rotated, not the same numbers
    # what the inverse is given is the same (Griffin-Lim's iterations then amplify float rounding)
    a, b = plain.magnitude(plain.encode(audio)), loaded.magnitude(tokens)
    assert float((a - b).abs().max()) < 1e-4 * float(a.abs().max())
    assert decode_whole(loaded, tokens).shape == (1, 1, tokens.shape[-1] * loaded.hop)
    with pytest.raises(ValueError, match="projected"):
        loaded.projected(q, torch.zeros(512))
    with pytest.raises(ValueError, match="renormalised"):
        loaded.normalised(0.0, 1.0)


def test_a_projected_model_gives_the_projection_of_the_old_models_velocity(tmp_path):
    """For tokens inside the subspace, the mapped network is the old one: v_new(z) = basis^T v_old(basis z)."""
    old = LMDMModel.preset(
        "tiny-mel", lmdm=WINDOW, seed=0, extras={"tempo": True, "sketch": True, "accomp": True}
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the zero-initialised layers (1x1 convs, input_add) must take part
        for name in ("preprocess_conv.weight", "postprocess_conv.weight", "to_input_add_embed.weight"):
            p = dict(old.dit.named_parameters())[name]
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    basis = torch.linalg.qr(torch.randn(512, 24, generator=g))[0]
    codec = old.mel_codec.projected(basis, torch.zeros(512))
    new = project_model(old, codec)
    assert new.dit.cfg.io_channels == 24 and new.codec.dim == 24

    k, c, t = 24, WINDOW.context_frames, WINDOW.block_frames
    z_ctx, z_acc, z_t = (torch.randn(1, k, n, generator=g) for n in (c, c, t))
    mask = torch.ones(1, 1, c)
    tempo_sketch = torch.randn(1, 10, c, generator=g)
    on = torch.ones(1, 1, c)

    def frames(lift) -> torch.Tensor:
        return torch.cat([mask, lift(z_ctx), tempo_sketch, on, lift(z_acc)], dim=1)

    lift = lambda z: torch.einsum("dk,bkn->bdn", basis, z)  # noqa: E731
    tokens = torch.randn(1, 5, 384, generator=g)
    glob = torch.randn(1, 384, generator=g)
    level = torch.tensor([0.6])
    new.save(tmp_path / "model.safetensors")  # a model like any other: saved and loaded with its codec
    loaded = LMDMModel.load(tmp_path / "model.safetensors", lmdm=WINDOW)
    assert loaded.codec.dim == 24 and torch.equal(loaded.mel_codec.basis, basis)

    def velocity(model: LMDMModel, lifted) -> torch.Tensor:
        with torch.no_grad():
            cond = Conditioning(model.dit.cross_kv(tokens), glob)
            return LMDM(model.dit, WINDOW).window_velocity(frames(lifted), lifted(z_t), level, cond)

    expected = torch.einsum("dk,bdn->bkn", basis, velocity(old, lift))
    for model in (new, loaded):
        v = velocity(model, lambda z: z)
        assert float((v - expected).abs().max()) < 1e-4 * float(expected.abs().max())
    # and the mapping matters: the unmapped network's own projection is something else
    assert float((velocity(old, lift)[:, :24] - expected).abs().max()) > 0.1 * float(expected.abs().max())


def test_train_project_writes_codec_sets_and_model_and_resumes(tmp_path):
    sets = []
    for i in range(2):
        ls = low_rank_set(seed=0, clips=6)
        ls.lead = [z + 1 for z in ls.latents]
        ls.solo_tokens = torch.zeros(6, 3, 384)
        ls.save(tmp_path / f"set{i}.safetensors")
        sets.append(tmp_path / f"set{i}.safetensors")
    plain = MelCodec(MelCodecConfig())
    plain.save(tmp_path / "codec.safetensors")
    model = LMDMModel.preset("tiny-mel", lmdm=WINDOW, seed=0)
    model.save(tmp_path / "stage1.safetensors")
    out = tmp_path / "p"
    lines: list[str] = []
    codec = run_project(
        sets, tmp_path / "codec.safetensors", 8, out, tmp_path / "stage1.safetensors", lines.append
    )
    assert "8 directions hold 99." in lines[0] or "8 directions hold 100." in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "codec.json",
        "codec.safetensors",
        "model.json",
        "model.safetensors",
        "set0.safetensors",
        "set1.safetensors",
    ]
    projected = LatentSet.load(out / "set1.safetensors")
    assert projected.latents[0].shape == (8, 40) and projected.lead[0].shape == (8, 40)
    assert LMDMModel.load(out / "model.safetensors").codec.dim == 8
    # run again: nothing is redone, the basis stays; another width is refused rather than mixed in
    (out / "set1.safetensors").unlink()
    again: list[str] = []
    codec2 = run_project(
        sets, tmp_path / "codec.safetensors", 8, out, tmp_path / "stage1.safetensors", again.append
    )
    assert again == [f"{out / 'set1.safetensors'}: projected"]
    assert torch.equal(codec.basis, codec2.basis)
    with pytest.raises(ValueError, match="keeps 8 directions"):
        run_project(sets, tmp_path / "codec.safetensors", 16, out)


def test_train_project_cli_per_frame(tmp_path, capsys):
    from lmdm_live.cli import main

    low_rank_set(clips=4).save(tmp_path / "set.safetensors")
    MelCodec(MelCodecConfig()).save(tmp_path / "codec.safetensors")
    argv = [
        "train",
        "project",
        "--data",
        str(tmp_path / "set.safetensors"),
        "--vae",
        str(tmp_path / "codec.safetensors"),
    ]
    assert main([*argv, "--dim", "32", "--per-frame", "--out", str(tmp_path / "p")]) == 0
    assert "32 directions (8 a frame) hold" in capsys.readouterr().out
    basis = load_codec(tmp_path / "p" / "codec.safetensors").basis
    assert torch.equal(basis, torch.block_diag(*[basis[:128, :8]] * 4))
    # a bad width is one line and exit 2, and a folder is never mixed across the two kinds of basis
    assert main([*argv, "--dim", "30", "--per-frame", "--out", str(tmp_path / "q")]) == 2
    assert "divisible" in capsys.readouterr().err
    assert main([*argv, "--dim", "32", "--out", str(tmp_path / "p")]) == 2
    assert "made with --per-frame" in capsys.readouterr().err
