import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmdm_live.model.checkpoint import load_checkpoint, sidecar_path
from lmdm_live.model.dit import DiTConfig
from lmdm_live.model.sao import (
    DIT_PREFIX,
    SECONDS_PREFIX,
    VAE_PREFIX,
    SAODiT,
    convert_sao,
    dit_config_from_sao,
    load_dit,
    load_vae_state_dict,
    read_state_dict,
)

DATA = Path(__file__).resolve().parents[1] / "data"
REF = DATA / "sat_dit_reference.safetensors"
REF_META = DATA / "sat_dit_reference.json"
SHARED = DATA / "sao-small"  # SAOS's published model_config.json and the shape of each of its 750 tensors

try:
    from lmdm_live.model import oobleck
except ImportError:  # pragma: no cover - the VAE module is optional for these tests
    oobleck = None

needs_vae = pytest.mark.skipif(oobleck is None, reason="lmdm_live.model.oobleck not available")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|"""
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


# --- helpers ---------------------------------------------------------------------------------------------------------


def small_model_config(qk_norm: str = "ln") -> dict:
    """A SAOS-layout model_config.json for a tiny model (same structure as the real one)."""
    oob = {"in_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [2, 2], "use_snake": True}
    return {
        "model_type": "diffusion_cond",
        "sample_size": 64,
        "sample_rate": 44100,
        "audio_channels": 2,
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "iterate_batch": False,
                "model_half": False,
                "config": {
                    "encoder": {
                        "type": "oobleck",
                        "requires_grad": False,
                        "config": {**oob, "latent_dim": 8},
                    },
                    "decoder": {
                        "type": "oobleck",
                        "config": {**oob, "out_channels": 2, "latent_dim": 4, "final_tanh": False},
                    },
                    "bottleneck": {"type": "vae"},
                    "latent_dim": 4,
                    "downsampling_ratio": 4,
                    "io_channels": 2,
                },
            },
            "conditioning": {
                "configs": [
                    {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 6}},
                    {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}},
                ],
                "cond_dim": 16,
            },
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "diffusion_objective": "rectified_flow",
                "type": "dit",
                "config": {
                    "io_channels": 4,
                    "embed_dim": 64,
                    "depth": 2,
                    "num_heads": 2,
                    "cond_token_dim": 16,
                    "global_cond_dim": 16,
                    "transformer_type": "continuous_transformer",
                    "attn_kwargs": {"qk_norm": qk_norm},
                },
            },
            "io_channels": 4,
        },
    }


def randomise_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values everywhere a checkpoint has values (zero-initialised layers and norm betas included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not name.endswith("inv_freq"):
                t.copy_(
                    torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.2 + (1.0 if t.ndim == 1 else 0.0)
                )
    return module


def small_checkpoint(tmp_path: Path, with_vae: bool = True) -> tuple[dict, Path, Path, SAODiT]:
    cfg = small_model_config()
    model = randomise_(SAODiT.from_sao_config(cfg))
    sd = {k: v.clone() for k, v in model.sao_state_dict().items()}
    if with_vae and oobleck is not None:
        from lmdm_live.model.sao import vae_config_from_sao

        vae = randomise_(oobleck.OobleckVAE(vae_config_from_sao(cfg)), seed=1)
        sd.update({VAE_PREFIX + k: v.clone() for k, v in vae.state_dict().items()})
    ckpt, conf = tmp_path / "model.safetensors", tmp_path / "model_config.json"
    save_file(sd, str(ckpt))
    conf.write_text(json.dumps(cfg))
    return sd, ckpt, conf, model


def small_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 4, 11, generator=g),
        torch.rand(2, generator=g),
        torch.randn(2, 7, 16, generator=g),
        torch.randn(2, 16, generator=g),
    )


# --- (a) parity with stable-audio-tools ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    return load_file(str(REF)), json.loads(REF_META.read_text())


def write_reference_checkpoint(reference, tmp_path: Path, suffix: str = ".safetensors") -> tuple[Path, Path]:
    tensors, meta = reference
    sd = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    ckpt = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(ckpt))
    else:  # a Lightning-style checkpoint
        torch.save({"state_dict": sd, "global_step": 7}, str(ckpt))
    conf = tmp_path / "model_config.json"
    conf.write_text(json.dumps(meta["model_config"]))
    return ckpt, conf


def reference_velocity(model: SAODiT, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The DiT's velocity for the inputs stable-audio-tools was run on, to hold against its `output.v`."""
    with torch.no_grad():
        return model(
            tensors["input.x"],
            tensors["input.t"],
            tensors["input.cross_attn_cond"],
            tensors["input.global_cond"],
        )


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_dit_matches_stable_audio_tools(reference, tmp_path, suffix):
    tensors, meta = reference
    assert len(meta["stable_audio_tools_commit"]) == 40
    model = load_dit(*write_reference_checkpoint(reference, tmp_path, suffix))
    assert model.dit.to_timestep_embed[0].weight.dtype == torch.float32
    v = reference_velocity(model, tensors)
    assert v.shape == tensors["output.v"].shape
    assert rel_err(v, tensors["output.v"]) <= 1e-5


def test_dit_matches_stable_audio_tools_float64(reference, tmp_path):
    tensors, _ = reference
    model = load_dit(*write_reference_checkpoint(reference, tmp_path), dtype=torch.float64)
    v = reference_velocity(model, tensors)
    assert v.dtype == torch.float64
    # both sides round q/k to float32 around RoPE, so float64 agrees to ~1e-8, not 1e-15
    assert rel_err(v, tensors["output.v"]) <= 1e-7


def test_seconds_conditioner_matches_stable_audio_tools(reference, tmp_path):
    tensors, _ = reference
    model = load_dit(*write_reference_checkpoint(reference, tmp_path))
    with torch.no_grad():
        e = model.seconds(tensors["input.seconds"])
    assert rel_err(e, tensors["output.seconds_embed"]) <= 1e-5


def test_saos_conditioning_layout(reference, tmp_path):
    tensors, _ = reference
    model = load_dit(*write_reference_checkpoint(reference, tmp_path))
    text = torch.randn(2, 6, 32)
    cross, glob = model.conditioning(text, tensors["input.seconds"])
    assert cross.shape == (2, 7, 32) and glob.shape == (2, 32)
    torch.testing.assert_close(cross[:, :6], text)
    torch.testing.assert_close(cross[:, 6], glob)
    assert rel_err(glob, tensors["output.seconds_embed"]) <= 1e-5
    _, glob1 = model.conditioning(text, [11.89])  # one duration for the whole batch
    torch.testing.assert_close(glob1[1], glob[0])


# --- (b) strict round trips ----------------------------------------------------------------------------------------


def test_small_round_trip(tmp_path):
    sd, ckpt, conf, original = small_checkpoint(tmp_path)
    model = load_dit(ckpt, conf)
    got = model.sao_state_dict()
    assert set(got) == {k for k in sd if not k.startswith("pretransform.")}
    for k, v in got.items():
        assert torch.equal(v, sd[k]), k
    with torch.no_grad():
        torch.testing.assert_close(model(*small_inputs()), original(*small_inputs()), rtol=0, atol=0)


@needs_vae
def test_small_vae_round_trip(tmp_path):
    sd, ckpt, conf, _ = small_checkpoint(tmp_path)
    vae = load_vae_state_dict(read_state_dict(ckpt), json.loads(conf.read_text()))
    for k, v in vae.state_dict().items():
        assert torch.equal(v, sd[VAE_PREFIX + k]), k


def pool_state_dict(shapes: dict[str, list[int]], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Fast pseudo-random tensors: windows of one random pool, a different offset per key."""
    pool = torch.randn(1_000_003, generator=torch.Generator().manual_seed(0)).to(dtype)
    big = pool.repeat(1 + max(torch.Size(s).numel() for s in shapes.values()) // pool.numel() + 1)
    out = {}
    for i, (k, s) in enumerate(sorted(shapes.items())):
        n, off = torch.Size(s).numel(), (i * 7919) % pool.numel()
        out[k] = big[off : off + n].reshape(s).clone()
    return out


def test_full_size_strict_round_trip(tmp_path):
    """Every one of the 750 tensors of the real checkpoint layout, at full size, is accepted and lands in place."""
    shapes = json.loads((SHARED / "state_dict_shapes.json").read_text())
    assert len(shapes) == 750
    inv_freq_key = DIT_PREFIX + "transformer.rotary_pos_emb.inv_freq"
    sd = pool_state_dict(shapes, torch.float16)
    sd[inv_freq_key] = 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64))
    ckpt = tmp_path / "model.safetensors"
    save_file(sd, str(ckpt))
    conf = tmp_path / "model_config.json"
    shutil.copy(SHARED / "model_config.json", conf)
    config = json.loads(conf.read_text())
    assert dit_config_from_sao(config) == DiTConfig()

    model = load_dit(ckpt, conf)
    got = model.sao_state_dict()
    assert {k: list(v.shape) for k, v in got.items()} == {
        k: s for k, s in shapes.items() if not k.startswith("pretransform.")
    }
    for k, v in got.items():
        assert torch.equal(v, sd[k].float()), k
    # DiT parameters + seconds conditioner + LayerNorm beta buffers: the published SAOS parameter count
    assert sum(v.numel() for k, v in got.items() if k != inv_freq_key) == 341_126_912
    del model, got
    if oobleck is not None:
        vae = load_vae_state_dict(sd, config)
        vae_sd = vae.state_dict()
        assert {VAE_PREFIX + k for k in vae_sd} == {k for k in shapes if k.startswith("pretransform.")}
        for k, v in vae_sd.items():
            assert torch.equal(v, sd[VAE_PREFIX + k].float()), k


# --- (c) errors ---------------------------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    return small_checkpoint(tmp_path)


def rewrite(ckpt: Path, sd: dict) -> Path:
    save_file(sd, str(ckpt))
    return ckpt


def test_missing_key_is_named(small):
    sd, ckpt, conf, _ = small
    key = DIT_PREFIX + "transformer.layers.1.ff_norm.gamma"
    del sd[key]
    with pytest.raises(ValueError, match=r"1 missing: model\.model\.transformer\.layers\.1\.ff_norm\.gamma"):
        load_dit(rewrite(ckpt, sd), conf)


def test_unexpected_key_is_named(small):
    sd, ckpt, conf, _ = small
    sd[DIT_PREFIX + "transformer.layers.0.bogus.weight"] = torch.zeros(3)
    sd["model_ema.something"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"2 unexpected: model\.model\.transformer\.layers\.0\.bogus\.weight"
    ):
        load_dit(rewrite(ckpt, sd), conf)


def test_wrong_shape_is_named(small):
    sd, ckpt, conf, _ = small
    sd[DIT_PREFIX + "to_cond_embed.0.weight"] = torch.zeros(64, 15)
    with pytest.raises(ValueError, match=r"1 wrong shape: model\.model\.to_cond_embed\.0\.weight \(64, 15\)"):
        load_dit(rewrite(ckpt, sd), conf)


def test_all_problems_in_one_error(small):
    sd, ckpt, conf, _ = small
    del sd[SECONDS_PREFIX + "embedder.embedding.0.weights"]
    sd["conditioner.conditioners.prompt.proj_out.weight"] = torch.zeros(2, 2)
    sd[DIT_PREFIX + "transformer.project_in.weight"] = torch.zeros(64, 5)
    with pytest.raises(ValueError) as e:
        load_dit(rewrite(ckpt, sd), conf)
    msg = str(e.value)
    assert "embedder.embedding.0.weights" in msg and "prompt.proj_out" in msg and "project_in" in msg


def test_many_missing_keys_are_counted(small):
    sd, ckpt, conf, _ = small
    sd = {k: v for k, v in sd.items() if ".layers.1." not in k or k.startswith("pretransform.")}
    with pytest.raises(ValueError, match=r"missing: .*\(\+\d+ more\)"):
        load_dit(rewrite(ckpt, sd), conf)


def test_split_self_attention_accepted(small):
    sd, ckpt, conf, original = small
    for k in [k for k in sd if k.endswith("self_attn.to_qkv.weight")]:
        w = sd.pop(k)
        sd[k.replace("to_qkv", "to_q")], sd[k.replace("to_qkv", "to_kv")] = w[:64].clone(), w[64:].clone()
    model = load_dit(rewrite(ckpt, sd), conf)
    with torch.no_grad():
        torch.testing.assert_close(model(*small_inputs()), original(*small_inputs()), rtol=0, atol=0)


def test_unsupported_config_rejected(small):
    _, ckpt, _, _ = small
    with pytest.raises(ValueError, match="qk_norm"):
        load_dit(ckpt, small_model_config(qk_norm="l2"))


def test_ckpt_needs_a_config(reference, tmp_path):
    ckpt, _ = write_reference_checkpoint(reference, tmp_path, ".ckpt")
    with pytest.raises(ValueError, match="model_config.json"):
        load_dit(ckpt)


def test_unknown_file_type(tmp_path):
    (tmp_path / "model.bin2").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown checkpoint type"):
        read_state_dict(tmp_path / "model.bin2")


@needs_vae
def test_vae_weight_norm_layouts(small):
    sd, _, conf, _ = small
    config = json.loads(conf.read_text())
    old_style = load_vae_state_dict(sd, config)
    param = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    assert any("parametrizations" in k for k in param)
    new_style = load_vae_state_dict(param, config)
    for (k1, v1), (k2, v2) in zip(old_style.state_dict().items(), new_style.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    # the DiT loader ignores either layout
    load_dit(rewrite(Path(conf).with_name("p.safetensors"), param), conf)


@needs_vae
def test_vae_errors_are_named(small):
    sd, _, conf, _ = small
    config = json.loads(conf.read_text())
    bad = dict(sd)
    del bad[VAE_PREFIX + "decoder.layers.0.bias"]
    bad[VAE_PREFIX + "decoder.bogus"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"1 missing: decoder\.layers\.0\.bias; 1 unexpected: decoder\.bogus"
    ):
        load_vae_state_dict(bad, config)
    bad = dict(sd)
    bad[VAE_PREFIX + "decoder.layers.0.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="decoder.layers.0.bias"):
        load_vae_state_dict(bad, config)


# --- (d) conversion ---------------------------------------------------------------------------------------------------


def test_convert_sao(small, tmp_path):
    sd, ckpt, conf, original = small
    out = tmp_path / "lmdm" / "model.safetensors"
    config = convert_sao(ckpt, conf, out)
    assert sidecar_path(out).is_file()
    conv, embedded = load_checkpoint(out)
    assert embedded == json.loads(sidecar_path(out).read_text()) == config
    assert config["dit"]["input_add_dim"] == 5 and config["self_attention"] == "split"
    for i in range(2):
        base = f"{DIT_PREFIX}transformer.layers.{i}.self_attn."
        assert base + "to_qkv.weight" not in conv
        assert conv[base + "to_q.weight"].shape == (64, 64) and conv[base + "to_kv.weight"].shape == (128, 64)
        assert torch.equal(
            torch.cat([conv[base + "to_q.weight"], conv[base + "to_kv.weight"]]), sd[base + "to_qkv.weight"]
        )
    add = conv[DIT_PREFIX + "to_input_add_embed.weight"]
    assert add.shape == (64, 5) and add.dtype == sd[DIT_PREFIX + "transformer.project_in.weight"].dtype
    assert not add.any()
    for k in [k for k in sd if k.startswith((SECONDS_PREFIX, "pretransform."))]:
        assert torch.equal(conv[k], sd[k]), k
    # the converted checkpoint loads by itself (config from its metadata) and still computes SAOS
    model = load_dit(out)
    assert model.cfg.input_add_dim == 5 and not model.dit.to_input_add_embed.weight.any()
    with torch.no_grad():
        torch.testing.assert_close(model(*small_inputs()), original(*small_inputs()), rtol=0, atol=0)
    if oobleck is not None:
        load_vae_state_dict(conv, config)


def test_convert_reference_keeps_parity(reference, tmp_path):
    tensors, _ = reference
    out = tmp_path / "lmdm.safetensors"
    convert_sao(*write_reference_checkpoint(reference, tmp_path), out, include_vae=False)
    model = load_dit(out)
    v = reference_velocity(model, tensors)
    assert rel_err(v, tensors["output.v"]) <= 1e-5


def test_convert_sao_then_load_as_an_lmdm_model(tmp_path, capsys):
    """`convert sao` output loads as an LMDM model that computes exactly the SAOS DiT (input_add is zero)."""
    from lmdm_live.cli import main
    from lmdm_live.model.bundle import LMDMModel

    _, ckpt, conf, sao = small_checkpoint(tmp_path)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", "sao", "--ckpt", str(ckpt), "--config", str(conf), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = LMDMModel.load(out)
    assert model.dit.cfg.input_add_dim == 1 + model.dit.cfg.io_channels
    assert model.text["type"] == "t5" and model.sample_rate == 44100
    x, t = torch.randn(2, 4, 12), torch.tensor([0.3, 0.9])
    cross, glob = torch.randn(2, 7, 16), torch.randn(2, 16)
    with torch.no_grad():
        want = sao(x, t, cross, glob)
        got = model.net(x, t, cross, glob)
    assert torch.allclose(got, want, atol=1e-5)
    try:
        model.text_encoder()
    except ValueError as e:
        assert "t5" in str(e).lower()
    else:
        raise AssertionError("a T5 model without a T5 path must say so")
    assert (
        main(
            [
                "convert",
                "sao",
                "--ckpt",
                str(tmp_path / "nope.ckpt"),
                "--config",
                str(conf),
                "--out",
                str(out),
            ]
        )
        == 2
    )
