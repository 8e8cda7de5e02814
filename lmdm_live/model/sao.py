"""Stable Audio Open Small checkpoints: strict loading, SAOS-style conditioning, conversion to LMDM.

Strict on purpose: a silently half-loaded DiT still produces audio, just bad audio, and that is the
hardest failure to notice on stage. Every mismatch is collected and reported in one error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmdm_live.model.checkpoint import load_checkpoint_config, save_checkpoint
from lmdm_live.model.conditioners import NumberConditioner
from lmdm_live.model.dit import DiT, DiTConfig

DIT_PREFIX = "model.model."
SECONDS_PREFIX = "conditioner.conditioners.seconds_total."
VAE_PREFIX = "pretransform.model."
LMDM_FORMAT = "lmdm_live.checkpoint"
_SELF_ATTN = ".self_attn."


# --- reading -------------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a `.safetensors` file or of a Lightning/torch `.ckpt`/`.pt`/`.pth` (its `state_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        obj = torch.load(str(path), weights_only=True, map_location="cpu")
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path.name} holds no state dict")
        return {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    raise ValueError(f"unknown checkpoint type {path.suffix!r} (expected .safetensors, .ckpt, .pt)")


def _read_config(config: str | Path | Mapping | None, checkpoint: str | Path) -> dict:
    if config is None:
        if Path(checkpoint).suffix != ".safetensors":
            raise ValueError(
                f"{Path(checkpoint).name}: pass its model_config.json (only LMDM checkpoints embed one)"
            )
        return load_checkpoint_config(checkpoint)
    if isinstance(config, Mapping):
        return dict(config)
    return json.loads(Path(config).read_text())


# --- configs -------------------------------------------------------------------------------------------------


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"unsupported SAO model config: {what}")


def dit_config_from_sao(model_config: Mapping) -> DiTConfig:
    """DiTConfig from a stable-audio-tools `model_config.json` (SAOS, or an LMDM fine-tune of it).

    Only the settings SAOS uses are supported; anything else raises rather than loading a different model.
    """
    if model_config.get("format") == LMDM_FORMAT:
        return DiTConfig(**model_config["dit"])
    diffusion = model_config["model"]["diffusion"]
    _require(diffusion.get("type", "dit") == "dit", f"diffusion type {diffusion.get('type')!r}")
    c = diffusion["config"]
    checks = {
        "transformer_type": ("continuous_transformer", c.get("transformer_type", "continuous_transformer")),
        "global_cond_type": ("prepend", c.get("global_cond_type", "prepend")),
        "timestep_cond_type": ("global", c.get("timestep_cond_type", "global")),
        "patch_size": (1, c.get("patch_size", 1)),
        "project_cond_tokens": (True, c.get("project_cond_tokens", True)),
        "project_global_cond": (True, c.get("project_global_cond", True)),
        "input_concat_dim": (0, c.get("input_concat_dim", 0)),
        "prepend_cond_dim": (0, c.get("prepend_cond_dim", 0)),
        "attn_kwargs.qk_norm": ("ln", c.get("attn_kwargs", {}).get("qk_norm", "none")),
    }
    for name, (want, got) in checks.items():
        _require(got == want, f"{name}={got!r} (SAOS uses {want!r})")
    ff = dict(c.get("ff_kwargs", {}))
    ff_mult = ff.pop("mult", 4)
    _require(not ff, f"ff_kwargs {ff}")
    input_add_dim = sum(int(d) for _, d in c.get("input_add_dims", []))
    return DiTConfig(
        io_channels=int(c["io_channels"]),
        embed_dim=int(c["embed_dim"]),
        depth=int(c["depth"]),
        num_heads=int(c["num_heads"]),
        cond_token_dim=int(c["cond_token_dim"]),
        global_cond_dim=int(c.get("global_cond_dim", 0)),
        ff_mult=int(ff_mult),
        input_add_dim=input_add_dim,
    )


def seconds_config_from_sao(model_config: Mapping) -> dict:
    """`{"output_dim", "min_val", "max_val"}` of the seconds_total conditioner."""
    if model_config.get("format") == LMDM_FORMAT:
        return dict(model_config["seconds_total"])
    cond = model_config["model"]["conditioning"]
    diffusion = model_config["model"]["diffusion"]
    by_id = {c["id"]: c for c in cond["configs"]}
    _require(
        "seconds_total" in by_id and by_id["seconds_total"]["type"] == "number", "no number seconds_total"
    )
    _require(
        list(diffusion.get("cross_attention_cond_ids", [])) == ["prompt", "seconds_total"],
        f"cross_attention_cond_ids {diffusion.get('cross_attention_cond_ids')}",
    )
    _require(
        list(diffusion.get("global_cond_ids", [])) == ["seconds_total"],
        f"global_cond_ids {diffusion.get('global_cond_ids')}",
    )
    sc = by_id["seconds_total"]["config"]
    return {
        "output_dim": int(cond["cond_dim"]),
        "min_val": float(sc.get("min_val", 0)),
        "max_val": float(sc.get("max_val", 1)),
    }


def text_config_from_sao(model_config: Mapping) -> dict:
    if model_config.get("format") == LMDM_FORMAT:
        return dict(model_config.get("text", {}))
    by_id = {c["id"]: c for c in model_config["model"]["conditioning"]["configs"]}
    prompt = by_id.get("prompt", {})
    return {"type": prompt.get("type"), **prompt.get("config", {})}


# --- the model -----------------------------------------------------------------------------------------------


class SAODiT(nn.Module):
    """SAOS's DiT plus its seconds conditioner: the parts of the checkpoint that run per denoising step."""

    def __init__(
        self, cfg: DiTConfig, seconds_dim: int = 768, seconds_min: float = 0.0, seconds_max: float = 256.0
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.dit = DiT(cfg)
        self.seconds = NumberConditioner(seconds_dim, seconds_min, seconds_max)

    @classmethod
    def from_sao_config(cls, model_config: Mapping) -> SAODiT:
        return cls(dit_config_from_sao(model_config), **_seconds_kwargs(model_config))

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cross_attn_cond: Tensor,
        global_cond: Tensor | None = None,
        cross_attn_cond_mask: Tensor | None = None,
    ) -> Tensor:
        """stable-audio-tools' `DiffusionTransformer.forward` at cfg_scale 1: velocity (B, io, L).

        `cross_attn_cond_mask` is accepted and ignored, as upstream does ("temporarily disabling conditioning
        masks"): padded text positions are zeros and are attended to.
        """
        dtype = self.dit.to_timestep_embed[0].weight.dtype
        g = None if global_cond is None else global_cond.to(dtype)
        return self.dit(x.to(dtype), t.to(dtype), cross_attn_cond.to(dtype), g)

    def conditioning(
        self, text_tokens: Tensor, seconds_total: Tensor | Sequence[float]
    ) -> tuple[Tensor, Tensor]:
        """SAOS conditioning: cross = [text tokens ; seconds token] (B, S+1, C), global = seconds (B, C)."""
        secs = self.seconds(seconds_total)
        b = text_tokens.shape[0]
        if secs.shape[0] == 1 and b > 1:
            secs = secs.expand(b, -1)
        if secs.shape[0] != b:
            raise ValueError(f"{secs.shape[0]} seconds values for a batch of {b} prompts")
        cross = torch.cat([text_tokens.to(secs.dtype), secs[:, None, :]], dim=1)
        return cross, secs

    # state dicts in the SAOS layout

    def sao_state_dict(self) -> dict[str, Tensor]:
        """Tensors under SAOS's checkpoint names (`model.model.*`, `conditioner.conditioners.seconds_total.*`)."""
        out = {DIT_PREFIX + k: v for k, v in self.dit.state_dict().items()}
        out.update({SECONDS_PREFIX + k: v for k, v in self.seconds.state_dict().items()})
        return out

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.sao_state_dict().items()}

    def load_sao_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Strictly load a SAOS/LMDM checkpoint's DiT + seconds tensors (`pretransform.*` is left to the VAE)."""
        sd = normalise_sao_keys(state_dict)
        check_state_dict(sd, self.expected_shapes(), what="SAO DiT")
        rope_key = DIT_PREFIX + "transformer.rotary_pos_emb.inv_freq"
        own_rope = self.dit.transformer.rotary_pos_emb.inv_freq
        if not torch.allclose(sd[rope_key].float(), own_rope.float(), rtol=1e-3, atol=0):
            raise ValueError(f"{rope_key} differs from the RoPE this config builds (other base or dim?)")
        with torch.no_grad():
            for k, v in self.sao_state_dict().items():
                if k != rope_key:  # keep our float32 RoPE table rather than a possibly rounded copy
                    v.copy_(sd[k])


def _seconds_kwargs(model_config: Mapping) -> dict[str, Any]:
    s = seconds_config_from_sao(model_config)
    return {"seconds_dim": s["output_dim"], "seconds_min": s["min_val"], "seconds_max": s["max_val"]}


def _meta_model(model_config: Mapping) -> SAODiT:
    """A shape-only SAODiT (no memory, no init) for checking checkpoints."""
    with torch.device("meta"):
        return SAODiT.from_sao_config(model_config)


# --- strict key checking -------------------------------------------------------------------------------------


def normalise_sao_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop `pretransform.*`; fuse LMDM's split self-attention (`to_q` + `to_kv`) back into `to_qkv`."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith("pretransform.")}
    for q_key in [k for k in sd if k.startswith(DIT_PREFIX) and k.endswith(_SELF_ATTN + "to_q.weight")]:
        base = q_key[: -len("to_q.weight")]
        kv_key, qkv_key = base + "to_kv.weight", base + "to_qkv.weight"
        if kv_key in sd and qkv_key not in sd:
            sd[qkv_key] = torch.cat([sd.pop(q_key), sd.pop(kv_key)], dim=0)
    return sd


def check_state_dict(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], what: str
) -> None:
    """Raise one ValueError listing every missing, unexpected and mis-shaped key."""
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != expected {tuple(expected[k])}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    raise_mismatch(
        what,
        [k for k in expected if k not in state_dict],
        [k for k in state_dict if k not in expected],
        wrong,
    )


def raise_mismatch(
    what: str, missing: Sequence[str], unexpected: Sequence[str], wrong: Sequence[str] = (), show: int = 5
) -> None:
    """One error for all problems: the first `show` of each kind, with counts."""
    problems = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        items = sorted(items)
        if items:
            more = f", ... (+{len(items) - show} more)" if len(items) > show else ""
            problems.append(f"{len(items)} {name}: " + ", ".join(items[:show]) + more)
    if problems:
        raise ValueError(f"checkpoint does not match the {what}: " + "; ".join(problems))


# --- loading -------------------------------------------------------------------------------------------------


def load_dit(
    checkpoint_path: str | Path,
    config_path: str | Path | Mapping | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> SAODiT:
    """Strictly load SAOS's (or a converted LMDM) DiT and seconds conditioner.

    `config_path` is SAOS's `model_config.json`, an LMDM checkpoint config, or None for the config embedded
    in an LMDM checkpoint. Self-attention may be fused (`to_qkv`) or split (`to_q` + `to_kv`).
    """
    config = _read_config(config_path, checkpoint_path)
    sd = normalise_sao_keys(read_state_dict(checkpoint_path))
    check_state_dict(sd, _meta_model(config).expected_shapes(), what="SAO DiT")  # fail before allocating
    model = SAODiT.from_sao_config(config)
    model.load_sao_state_dict(sd)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def vae_config_from_sao(model_config: Mapping) -> Any:
    from lmdm_live.model.oobleck import OobleckConfig

    pretransform = (
        model_config.get("pretransform")
        if model_config.get("format") == LMDM_FORMAT
        else (model_config["model"].get("pretransform"))
    )
    if not pretransform:
        raise ValueError("config has no pretransform (VAE) section")
    _require(pretransform.get("type") == "autoencoder", f"pretransform type {pretransform.get('type')!r}")
    pc = pretransform["config"]
    _require(pc["encoder"]["type"] == "oobleck" and pc["decoder"]["type"] == "oobleck", "non-Oobleck VAE")
    _require(pc.get("bottleneck", {}).get("type") == "vae", f"bottleneck {pc.get('bottleneck')}")
    return OobleckConfig.from_sao_pretransform(pc)


def load_vae_state_dict(
    state_dict: Mapping[str, Tensor], model_config: Mapping, vae: nn.Module | None = None
) -> nn.Module:
    """Strictly load the checkpoint's `pretransform.model.*` tensors into an Oobleck VAE (built if not given).

    Weight-normed convs may come as `weight_g`/`weight_v` or as `parametrizations.weight.original0/1`.
    """
    from lmdm_live.model.oobleck import OobleckVAE, load_oobleck_state_dict

    if vae is None:
        vae = OobleckVAE(vae_config_from_sao(model_config))
    sub = {k: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)}
    if not sub:
        raise ValueError("checkpoint has no pretransform.model.* (VAE) tensors")
    try:
        missing, unexpected = load_oobleck_state_dict(vae, sub, strict=False, prefix=VAE_PREFIX)
    except RuntimeError as e:  # size mismatches
        raise ValueError(f"checkpoint does not match the Oobleck VAE: {e}") from None
    raise_mismatch("Oobleck VAE", missing, unexpected)
    return vae.eval()


# --- conversion ----------------------------------------------------------------------------------------------


def lmdm_config_from_sao(
    model_config: Mapping, input_add_dim: int | None = None, include_vae: bool = True
) -> dict:
    """The config of an LMDM checkpoint made from a SAOS one (see `convert_sao`)."""
    cfg = dit_config_from_sao(model_config)
    add = 1 + cfg.io_channels if input_add_dim is None else input_add_dim
    dit = {**asdict(cfg), "input_add_dim": add}
    out: dict[str, Any] = {
        "format": LMDM_FORMAT,
        "version": 1,
        "dit": {f.name: dit[f.name] for f in fields(DiTConfig)},
        "seconds_total": seconds_config_from_sao(model_config),
        "text": text_config_from_sao(model_config),
        "sample_rate": model_config.get("sample_rate"),
        "audio_channels": model_config.get("audio_channels"),
        "self_attention": "split",
        "source_model_config": dict(model_config),
    }
    if include_vae:
        out["pretransform"] = model_config["model"].get("pretransform")
    return out


def convert_sao(
    checkpoint_path: str | Path,
    config_path: str | Path,
    out_path: str | Path,
    input_add_dim: int | None = None,
    include_vae: bool = True,
) -> dict:
    """SAOS checkpoint -> LMDM checkpoint (safetensors + config), keeping tensor dtypes.

    Adds a zero `to_input_add_embed` (embed_dim, 1 + io_channels by default) so the converted model still
    computes exactly SAOS until fine-tuned, and stores self-attention split as `to_q` (D, D) + `to_kv` (2D, D),
    the layout LMDM's KV cache uses. The VAE tensors are copied when `include_vae`. Returns the config.
    """
    model_config = _read_config(config_path, checkpoint_path)
    if model_config.get("format") == LMDM_FORMAT:
        raise ValueError("already an LMDM checkpoint")
    raw = read_state_dict(checkpoint_path)
    sd = normalise_sao_keys(raw)
    check_state_dict(sd, _meta_model(model_config).expected_shapes(), what="SAO DiT")
    config = lmdm_config_from_sao(model_config, input_add_dim, include_vae)
    d = config["dit"]["embed_dim"]
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith(DIT_PREFIX) and k.endswith(_SELF_ATTN + "to_qkv.weight"):
            base = k[: -len("to_qkv.weight")]
            out[base + "to_q.weight"], out[base + "to_kv.weight"] = v[:d].clone(), v[d:].clone()
        else:
            out[k] = v
    ref = sd[DIT_PREFIX + "transformer.project_in.weight"]
    out[DIT_PREFIX + "to_input_add_embed.weight"] = torch.zeros(
        d, config["dit"]["input_add_dim"], dtype=ref.dtype
    )
    if include_vae:
        out.update({k: v for k, v in raw.items() if k.startswith("pretransform.")})
    save_checkpoint(out_path, out, config)
    return config
