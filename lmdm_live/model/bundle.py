"""One LMDM checkpoint as objects: the SAOS-layout DiT with its seconds conditioner, the window, the VAE.

An LMDM checkpoint is SAOS's state-dict layout (`model.model.*`, `conditioner.conditioners.seconds_total.*`,
`pretransform.model.*`) in one safetensors file with its JSON config embedded (see `checkpoint.py`). The
same loader reads checkpoints converted from SAOS (`sao.convert_sao`) and the project's own models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor

from . import int8
from .checkpoint import load_checkpoint, save_checkpoint
from .codec import (
    Codec,
    MelCodec,
    MelCodecConfig,
    VAECodec,
    codec_from_training,
    is_codec_file,
    mel_codec_from_config,
)
from .conditioners import MiniLMTextEncoder, T5TextEncoder, TextEncoder
from .dit import DiT, DiTConfig
from .extras import ExtrasLayout
from .lmdm import LMDMConfig
from .oobleck import OobleckConfig, OobleckVAE, load_oobleck_state_dict
from .precision import INT8
from .samplers import SamplerSettings
from .sao import (
    LMDM_FORMAT,
    VAE_PREFIX,
    SAODiT,
    load_vae_state_dict,
    normalise_sao_keys,
    vae_config_from_sao,
)
from .tone import tone_map

PRESETS = ("tiny", "small", "tiny-mel", "saos-random")
CODEC_PREFIX = "codec."


@dataclass
class LMDMModel:
    net: SAODiT
    lmdm: LMDMConfig
    vae: OobleckVAE | None  # the Oobleck autoencoder, for models on one (else `mel_codec`)
    sample_rate: int
    text: dict  # {"type": "minilm"} or {"type": "t5", "max_length": 64, ...}
    seconds_total: float  # the seconds value the model conditions on (SAOS: length of the window)
    name: str = "model"
    extras: dict = field(default_factory=dict)  # the named extra channels (see lmdm_live.model.extras)
    sampler: dict = field(default_factory=dict)  # the sampler settings it plays best with (SamplerSettings)
    mel_codec: MelCodec | None = None  # the log-mel codec, for models on one
    styles: dict[str, str] = field(default_factory=dict)  # what it was trained on: style -> one line
    level: float = 1.0  # output gain that brings its music to its training music's loudness (`eval level`)

    @property
    def codec(self) -> Codec:
        """What the DiT's tokens are: `codec.encode(audio)`, `codec.decode(tokens)`, its streaming decoder."""
        if self.mel_codec is not None:
            return self.mel_codec
        if self.vae is None:
            raise ValueError(f"model {self.name!r} has no codec")
        return VAECodec(self.vae, self.sample_rate)

    def sampler_settings(self, **overrides) -> SamplerSettings:
        """The model's own sampler defaults with `overrides` (those that are not None) on top."""
        return SamplerSettings(**{**self.sampler, **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def layout(self) -> ExtrasLayout:
        tm = None
        if (self.extras or {}).get("tone"):
            if self.mel_codec is None:
                raise ValueError(f"model {self.name!r} has tone channels but no log-mel codec to make them")
            tm = tone_map(self.mel_codec)
        layout = ExtrasLayout.from_config(self.extras, self.dit.cfg.io_channels, tm)
        if layout.channels > self.dit.cfg.extra_add_channels:
            raise ValueError(
                f"the extras layout needs {layout.channels} channels, the DiT has {self.dit.cfg.extra_add_channels}"
            )
        return layout

    @property
    def dit(self) -> DiT:
        return self.net.dit

    @property
    def hop(self) -> int:
        return self.codec.hop

    @property
    def block_seconds(self) -> float:
        return self.lmdm.block_frames * self.hop / self.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.codec.channels

    def text_encoder(self, t5_path: str | Path | None = None) -> TextEncoder:
        """The text encoder this model was trained with. T5 weights are never fetched: give their directory."""
        kind = self.text.get("type")
        if kind == "minilm":
            enc: TextEncoder = MiniLMTextEncoder(max_length=int(self.text.get("max_length", 64)))
        elif kind == "t5":
            if t5_path is None:
                raise ValueError(
                    "this model conditions on T5 text: pass the local t5-base directory (--t5 PATH)"
                )
            enc = T5TextEncoder(t5_path, max_length=int(self.text.get("max_length", 64)), dtype=torch.float32)
        else:
            raise ValueError(f"unknown text encoder type {kind!r} in the model config")
        if enc.dim != self.dit.cfg.cond_token_dim:
            raise ValueError(
                f"text encoder gives {enc.dim}-d tokens, the DiT expects {self.dit.cfg.cond_token_dim}"
            )
        return enc

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> LMDMModel:
        self.net.to(device=device, dtype=dtype)
        for codec in (self.vae, self.mel_codec):
            if codec is not None:
                codec.to(device=device)
        return self

    # --- files ------------------------------------------------------------------------------------------

    def config(self) -> dict:
        d = asdict(self.dit.cfg)
        return {
            "format": LMDM_FORMAT,
            "version": 1,
            "name": self.name,
            "dit": {f.name: d[f.name] for f in fields(DiTConfig)},
            "seconds_total": {
                "output_dim": self.net.seconds.output_dim,
                "min_val": self.net.seconds.min_val,
                "max_val": self.net.seconds.max_val,
            },
            "seconds_value": self.seconds_total,
            "text": dict(self.text),
            "sample_rate": self.sample_rate,
            "audio_channels": self.audio_channels,
            "self_attention": "fused",
            "lmdm": asdict(self.lmdm),
            **({"vae": self.vae.cfg.to_dict()} if self.vae is not None else {}),
            **({"codec": self.mel_codec.config()} if self.mel_codec is not None else {}),
            "extras": dict(self.extras),
            "sampler": dict(self.sampler),
            **({"styles": dict(self.styles)} if self.styles else {}),
            **({"level": self.level} if self.level != 1.0 else {}),
        }

    def state_dict(self) -> dict[str, Tensor]:
        sd = self.net.sao_state_dict()
        if self.vae is not None:
            sd.update({VAE_PREFIX + k: v for k, v in self.vae.state_dict().items()})
        if self.mel_codec is not None:
            sd.update({CODEC_PREFIX + k: v for k, v in self.mel_codec.state_dict().items()})
        return sd

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, self.state_dict(), self.config())

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        lmdm: LMDMConfig | None = None,
    ) -> LMDMModel:
        """Strictly load an LMDM checkpoint; `lmdm` overrides the window (mode, context, block) it was saved with."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        sd, config = load_checkpoint(path)
        if config.get("format") != LMDM_FORMAT:
            raise ValueError(
                f"{path.name} is not an LMDM checkpoint (convert SAOS with `lmdm-live convert sao`)"
            )
        mel = None
        if "codec" in config:
            codec_sd = {k[len(CODEC_PREFIX) :]: v for k, v in sd.items() if k.startswith(CODEC_PREFIX)}
            sd = {k: v for k, v in sd.items() if not k.startswith(CODEC_PREFIX)}
            mel = mel_codec_from_config(config["codec"], codec_sd)
        net = SAODiT.from_sao_config(config)
        net.load_sao_state_dict(normalise_sao_keys(sd))
        if mel is not None:
            vae = None
        elif "vae" in config:
            vae = OobleckVAE(OobleckConfig.from_dict(config["vae"]))
            sub = {k: v for k, v in sd.items() if k.startswith(VAE_PREFIX)}
            load_oobleck_state_dict(vae, sub, strict=True, prefix=VAE_PREFIX)
        else:
            vae = load_vae_state_dict(sd, config, OobleckVAE(vae_config_from_sao(config)))
        window = lmdm or LMDMConfig(**config.get("lmdm", {}))
        level = float(config.get("level", 1.0))
        if not (math.isfinite(level) and level > 0):
            raise ValueError(f"{path.name}: its level must be a positive number, got {config.get('level')!r}")
        secs = float(config.get("seconds_value", window.context_frames + window.block_frames))
        model = cls(
            net.eval().requires_grad_(False),
            window,
            None if vae is None else vae.eval().requires_grad_(False),
            int(config["sample_rate"]),
            dict(config.get("text", {})),
            secs,
            config.get("name", path.stem),
            dict(config.get("extras", {})),
            dict(config.get("sampler", {})),
            mel,
            dict(config.get("styles", {})),
            level,
        )
        if "seconds_value" not in config:  # SAOS conditions on the window's length in seconds
            model.seconds_total = (
                (window.context_frames + window.block_frames) * model.hop / model.sample_rate
            )
        return model.to(device, dtype)

    # --- presets ----------------------------------------------------------------------------------------

    @classmethod
    def preset(
        cls, name: str, lmdm: LMDMConfig | None = None, seed: int = 0, extras: dict | None = None
    ) -> LMDMModel:
        """Randomly initialised models of fixed shapes, for benchmarks and tests (they make noise, not music).

        tiny (256x8) and small (512x12): DiTs over MiniLM text with a small mono VAE, for two CPU cores.
        tiny-mel: the tiny DiT over the 44.1 kHz log-mel codec (512-wide tokens, 21.5 per second).
        saos-random: Stable Audio Open Small's exact shapes (DiT 1024x16, T5 768-d tokens, stereo VAE).
        """
        lmdm = lmdm or LMDMConfig()
        g = torch.Generator().manual_seed(seed)
        minilm = {"tiny": (256, 8, 4), "small": (512, 12, 8)}  # width, depth, heads over MiniLM's 384-d text
        mel = None
        if name == "tiny-mel":
            mel = MelCodec(MelCodecConfig()).eval()
            io = mel.dim
            dit_cfg = DiTConfig(
                io_channels=io,
                embed_dim=256,
                depth=8,
                num_heads=4,
                cond_token_dim=384,
                global_cond_dim=384,
                input_add_dim=1 + io + ExtrasLayout.from_config(extras, io).channels,
            )
            vae_cfg, sr, text = None, mel.sample_rate, {"type": "minilm", "max_length": 64}
        elif name in minilm:
            width, depth, heads = minilm[name]
            dit_cfg = DiTConfig(
                io_channels=64,
                embed_dim=width,
                depth=depth,
                num_heads=heads,
                cond_token_dim=384,
                global_cond_dim=384,
                input_add_dim=1 + 64 + ExtrasLayout.from_config(extras, 64).channels,
            )
            vae_cfg, sr, text = (
                OobleckConfig.small(audio_channels=1),
                44100,
                {"type": "minilm", "max_length": 64},
            )
        elif name == "saos-random":
            dit_cfg = DiTConfig(input_add_dim=1 + 64 + ExtrasLayout.from_config(extras, 64).channels)
            vae_cfg, sr, text = OobleckConfig.saos(), 44100, {"type": "t5", "max_length": 64}
        else:
            raise ValueError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            net = SAODiT(dit_cfg, seconds_dim=dit_cfg.global_cond_dim, seconds_min=0.0, seconds_max=256.0)
            _randomise(net.dit)
            vae = OobleckVAE(vae_cfg) if vae_cfg is not None else None
        hop = mel.hop if mel is not None else vae_cfg.hop
        secs = (lmdm.context_frames + lmdm.block_frames) * hop / sr
        return cls(
            net.eval().requires_grad_(False),
            lmdm,
            None if vae is None else vae.eval().requires_grad_(False),
            sr,
            text,
            secs,
            name,
            ExtrasLayout.from_config(extras, dit_cfg.io_channels).to_dict() if extras else {},
            mel_codec=mel,
        )


@torch.no_grad()
def _randomise(dit: DiT) -> None:
    """Give the zero-initialised layers (conv skips, input_add) weights, so a random model uses every path."""
    for m in (dit.preprocess_conv, dit.postprocess_conv):
        m.weight.normal_(0.0, 0.1 / m.weight.shape[1] ** 0.5)
    if dit.cfg.input_add_dim:
        w = dit.to_input_add_embed.weight
        w.normal_(0.0, 1.0 / w.shape[1] ** 0.5)


def load_model(name: str, lmdm: LMDMConfig | None, device: str, dtype: torch.dtype) -> LMDMModel:
    """A preset by name (random weights), else a checkpoint file. `precision.INT8` loads float32 and gives
    the transformer's linears int8 weights."""
    real = torch.float32 if dtype == INT8 else dtype
    if name in PRESETS:
        model = LMDMModel.preset(name, lmdm=lmdm).to(device, real)
    else:
        model = LMDMModel.load(name, device=device, dtype=real, lmdm=lmdm)
    if dtype == INT8:
        int8.quantize(model.dit.transformer.layers)
    return model


def load_codec(path: str | Path) -> Codec:
    """A codec file, or the codec inside an LMDM file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codec file not found: {path}")
    if not is_codec_file(path):
        return LMDMModel.load(path).codec
    sd, config = load_checkpoint(path)
    if config.get("type") == "mel":
        return mel_codec_from_config(config, sd)
    if "vocoder" in config and "kind" in config:  # a `train codec` run's weights
        return codec_from_training(config, sd)
    raise ValueError(f"{path.name}: unknown codec type {config.get('type')!r}")
