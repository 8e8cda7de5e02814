"""The audio codec of a model, one way whatever its design: what the DiT sees, and audio back.

    codec.encode(audio)       (B, C, N) -> (B, dim, N // hop) tokens
    codec.decode(tokens)      (B, dim, T) -> (B, channels, T * hop) audio
    codec.streaming_decoder() push(tokens) -> audio, flush() -> the tail, latency_samples

Three designs share it: the Oobleck VAE (Stable Audio Open's, and the 16 kHz default model's), the fixed
log-mel codec with a DSP inverse (streaming Griffin-Lim) or a trained vocoder, and a learned autoencoder
over the log-mel. A codec file is a safetensors file with its config embedded (`format:
lmdm_live.codec`); an LMDM file carries its codec inside.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint_config, save_checkpoint
from .griffinlim import GriffinLimConfig, StreamingGriffinLim
from .mel import MelAnalysis, MelConfig, nnls_magnitude
from .oobleck import OobleckVAE
from .oobleck_stream import StreamingDecoder
from .vocoder import MelAutoencoder, MelVocoder, StreamingVocoder, VocoderConfig

CODEC_FORMAT = "lmdm_live.codec"
SHIPPED_CODEC = Path(__file__).resolve().parent.parent / "assets" / "codec.safetensors"  # docs/codec.md
INVERSES = ("griffinlim", "vocoder", "autoencoder")


class StreamDecoder(Protocol):
    latency_samples: int

    def push(self, tokens: Tensor) -> Tensor: ...
    def flush(self) -> Tensor: ...
    def reset(self) -> None: ...
    def snapshot(self) -> object: ...  # the carried state, to `restore` and decode the same again
    def restore(self, snap: object) -> None: ...


class Codec(Protocol):
    sample_rate: int
    channels: int
    hop: int
    dim: int
    encoder_margin: int

    def encode(self, audio: Tensor) -> Tensor: ...
    def decode(self, tokens: Tensor) -> Tensor: ...
    def streaming_decoder(self) -> StreamDecoder: ...


def decode_whole(codec: Codec, tokens: Tensor) -> Tensor:
    """A whole-sequence decode through the streaming decoder: one code path for both."""
    dec = codec.streaming_decoder()
    audio = torch.cat([dec.push(tokens), dec.flush()], dim=-1)
    return audio[..., : tokens.shape[-1] * codec.hop]


# --- the Oobleck VAE ------------------------------------------------------------------------------------


class _VAEStreamDecoder:
    def __init__(self, vae: OobleckVAE) -> None:
        self._dec = StreamingDecoder(vae.decoder)
        self.latency_samples = self._dec.latency_samples

    def push(self, tokens: Tensor) -> Tensor:
        return self._dec.push(tokens)

    def flush(self) -> Tensor:
        return self._dec.flush()

    def reset(self) -> None:
        self._dec.reset()

    def snapshot(self) -> object:
        return copy.deepcopy(self._dec.state)

    def restore(self, snap: object) -> None:
        self._dec.state = copy.deepcopy(snap)


class VAECodec:
    """An Oobleck VAE as a codec: tokens are the posterior means."""

    def __init__(self, vae: OobleckVAE, sample_rate: int) -> None:
        self.vae, self.sample_rate = vae, int(sample_rate)
        self.channels, self.hop, self.dim = vae.cfg.out_channels, vae.cfg.hop, vae.cfg.latent_dim

    @property
    def encoder_margin(self) -> int:
        """Frames of context each side an encoded frame depends on (the encoder's receptive field)."""
        reach, jump = 0, 1
        for mod in self.vae.encoder.modules():
            k, d, s = (
                getattr(mod, "kernel_size", None),
                getattr(mod, "dilation", 1),
                getattr(mod, "stride", 1),
            )
            if isinstance(k, int) and hasattr(mod, "padding"):
                reach += (k - 1) * d * jump // 2
                jump *= s
        return max(1, -(-reach // jump))

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        p = next(self.vae.parameters())
        return self.vae.encode(audio.to(p.device, p.dtype))

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        return self.vae.decode(tokens)

    def streaming_decoder(self) -> StreamDecoder:
        return _VAEStreamDecoder(self.vae)


# --- the log-mel codec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelCodecConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    inverse: str = "griffinlim"
    griffinlim: GriffinLimConfig = field(default_factory=GriffinLimConfig)
    nnls_iters: int = 16
    vocoder: VocoderConfig | None = None  # the trained network of the vocoder and autoencoder inverses
    # > 0: tokens are the projections of the log-mel tokens on their `project` principal directions (the
    # `basis` and `offset` buffers, from `train project`): a narrower target for the DiT, same inverse
    project: int = 0

    def __post_init__(self) -> None:
        if self.inverse not in INVERSES:
            raise ValueError(f"inverse must be one of {', '.join(INVERSES)}, got {self.inverse!r}")
        if self.inverse != "griffinlim" and self.vocoder is None:
            raise ValueError(f"the {self.inverse} inverse needs its network's config")
        if self.project and (self.inverse == "autoencoder" or not 0 < self.project <= self.mel.token_dim):
            raise ValueError(
                f"project must be 0 or 1..{self.mel.token_dim}, over a log-mel (not autoencoder) inverse"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.vocoder is None:
            d.pop("vocoder")
        if not self.project:
            d.pop("project")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MelCodecConfig:
        return cls(
            mel=MelConfig.from_dict(d["mel"]),
            inverse=d.get("inverse", "griffinlim"),
            griffinlim=GriffinLimConfig(**d.get("griffinlim", {})),
            nnls_iters=int(d.get("nnls_iters", 16)),
            vocoder=VocoderConfig.from_dict(d["vocoder"]) if d.get("vocoder") else None,
            project=int(d.get("project", 0)),
        )


class _GriffinLimStream:
    def __init__(self, codec: MelCodec) -> None:
        self.codec = codec
        self.gl = StreamingGriffinLim(codec.cfg.griffinlim)
        self.latency_samples = self.gl.latency_samples

    def push(self, tokens: Tensor) -> Tensor:
        with torch.no_grad():
            return self.gl.push(self.codec.magnitude(tokens.float()))[:, None]

    def flush(self) -> Tensor:
        return self.gl.flush()[:, None]

    def reset(self) -> None:
        self.gl.reset()

    def snapshot(self) -> object:
        return copy.deepcopy(self.gl.state)

    def restore(self, snap: object) -> None:
        self.gl.state = copy.deepcopy(snap)


class _VocoderStream:
    def __init__(self, codec: MelCodec) -> None:
        self.codec = codec
        self.voc = StreamingVocoder(codec.net)
        self.latency_samples = self.voc.latency_samples

    def push(self, tokens: Tensor) -> Tensor:
        if self.codec.cfg.inverse == "autoencoder":
            return self.voc.push(tokens.float())[:, None]
        return self.voc.push(self.codec.analysis.from_tokens(self.codec.full_tokens(tokens.float())))[:, None]

    def flush(self) -> Tensor:
        return self.voc.flush()[:, None]

    def reset(self) -> None:
        self.voc.reset()

    def snapshot(self) -> object:
        return copy.deepcopy({k: v for k, v in vars(self.voc).items() if k != "net"})

    def restore(self, snap: object) -> None:
        assert isinstance(snap, dict)
        vars(self.voc).update(copy.deepcopy(snap))


class MelCodec(nn.Module):
    """44.1 kHz mono; 128-band log-mel, four frames to a token (512 values, 21.5 tokens/s), inverted by
    streaming Griffin-Lim or a trained vocoder. With the autoencoder inverse the tokens are instead a
    learned `latent_dim`-wide code of the same log-mel; with `project` they are the log-mel tokens'
    coordinates on their leading principal directions (z = basis^T x; x ~ basis z + offset, where `offset`
    is the part of the tokens' mean outside the basis)."""

    channels = 1

    def __init__(self, cfg: MelCodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.analysis = MelAnalysis(cfg.mel)
        self.net: MelVocoder | MelAutoencoder | None = None
        if cfg.inverse == "vocoder":
            self.net = MelVocoder(cfg.vocoder)
        elif cfg.inverse == "autoencoder":
            self.net = MelAutoencoder(cfg.vocoder)
        self.sample_rate = cfg.mel.sample_rate
        self.hop = cfg.mel.token_hop
        self.dim = cfg.vocoder.latent_dim if cfg.inverse == "autoencoder" else cfg.mel.token_dim
        if cfg.project:
            self.dim = cfg.project
            self.register_buffer("basis", torch.eye(cfg.mel.token_dim)[:, : cfg.project].contiguous())
            self.register_buffer("offset", torch.zeros(cfg.mel.token_dim))
        # tokens of context each side an encoded token depends on: half a frame's window, and for the
        # autoencoder its encoder's reach (15 frames back, 3 ahead)
        self.encoder_margin = 5 if cfg.inverse == "autoencoder" else 1

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        """(B, C, N) or (B, N) audio -> tokens; channels are mixed to mono."""
        x = audio.float()
        if x.dim() == 3:
            x = x.mean(dim=1)
        log_mel = self.analysis.log_mel(x)
        if self.cfg.inverse == "autoencoder":
            t = log_mel.shape[-1] - log_mel.shape[-1] % self.cfg.mel.group
            return self.net.encode(log_mel[..., :t])
        return self.project_tokens(self.analysis.to_tokens(log_mel))

    def project_tokens(self, full: Tensor) -> Tensor:
        """Log-mel tokens (B, token_dim, T) -> the codec's tokens (B, dim, T): unchanged unless projected."""
        if not self.cfg.project:
            return full
        return torch.einsum("kd,bkt->bdt", self.basis, full)

    def full_tokens(self, tokens: Tensor) -> Tensor:
        """The codec's tokens -> log-mel tokens (B, token_dim, T), the inverse's input."""
        if not self.cfg.project:
            return tokens
        return torch.einsum("kd,bdt->bkt", self.basis, tokens) + self.offset[:, None]

    def magnitude(self, tokens: Tensor) -> Tensor:
        """Tokens -> non-negative STFT magnitudes (B, n_bins, frames) whose mel is the tokens'."""
        power = self.analysis.mel_power(self.analysis.from_tokens(self.full_tokens(tokens)))
        return nnls_magnitude(self.analysis.fb, power, self.cfg.nnls_iters).sqrt()

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        return decode_whole(self, tokens)

    def streaming_decoder(self) -> StreamDecoder:
        return _GriffinLimStream(self) if self.net is None else _VocoderStream(self)

    def _require_plain(self, what: str) -> None:
        """Only plain log-mel tokens (no learnt inverse, not yet projected) map onto new tokens exactly."""
        if self.cfg.inverse == "autoencoder" or self.cfg.project:
            raise ValueError(f"only plain log-mel tokens can be {what}")

    def normalised(self, mean: float, std: float) -> MelCodec:
        """The same codec with tokens (tokens - mean) / std: folded into the log-mel's shift and scale, so
        the DiT sees zero-mean, unit-variance tokens and decoding is unchanged."""
        self._require_plain("renormalised by the mel's shift and scale")
        mel = replace(
            self.cfg.mel, shift=self.cfg.mel.shift + mean * self.cfg.mel.scale, scale=self.cfg.mel.scale * std
        )
        out = MelCodec(replace(self.cfg, mel=mel))
        out.load_state_dict(self.state_dict(), strict=True)
        return out.eval().requires_grad_(False)

    def projected(self, basis: Tensor, offset: Tensor) -> MelCodec:
        """The same codec with tokens basis^T x (basis (token_dim, k) orthonormal; offset (token_dim,) what
        decoding adds back: the tokens' mean outside the basis)."""
        self._require_plain("projected")
        if basis.dim() != 2 or basis.shape[0] != self.cfg.mel.token_dim or offset.shape != basis.shape[:1]:
            raise ValueError(
                f"basis must be ({self.cfg.mel.token_dim}, k) and offset ({self.cfg.mel.token_dim},)"
            )
        out = MelCodec(replace(self.cfg, project=basis.shape[1]))
        out.load_state_dict(
            {**self.state_dict(), "basis": basis.float().contiguous(), "offset": offset.float()}, strict=True
        )
        return out.eval().requires_grad_(False)

    def with_griffinlim(self, **changes: object) -> MelCodec:
        """The same codec with its Griffin-Lim inverse changed (e.g. `iters=16`: 0.6 of the decode time for
        a little of the pitch and mel distance; docs/codec.md measures it). The tokens are unchanged."""
        if self.net is not None:
            raise ValueError("this codec is inverted by a trained network, not Griffin-Lim")
        out = MelCodec(replace(self.cfg, griffinlim=replace(self.cfg.griffinlim, **changes)))
        out.load_state_dict(self.state_dict(), strict=True)
        return out.eval().requires_grad_(False)

    def config(self) -> dict:
        return {"format": CODEC_FORMAT, "type": "mel", **self.cfg.to_dict()}

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {k: v.contiguous() for k, v in self.state_dict().items()}, self.config())


def mel_codec_from_config(config: dict, state_dict: dict[str, Tensor] | None = None) -> MelCodec:
    codec = MelCodec(MelCodecConfig.from_dict(config))
    if state_dict is not None:
        codec.load_state_dict(state_dict, strict=True)
    return codec.eval().requires_grad_(False)


def is_codec_file(path: str | Path) -> bool:
    return load_checkpoint_config(path).get("format") == CODEC_FORMAT


def codec_from_training(config: dict, state_dict: dict[str, Tensor]) -> MelCodec:
    """The codec a `train codec` run's weights make: its network as the inverse of its mel."""
    inverse = "autoencoder" if config["kind"] == "ae" else "vocoder"
    cfg = MelCodecConfig(
        mel=MelConfig.from_dict(config["mel"]),
        inverse=inverse,
        vocoder=VocoderConfig.from_dict(config["vocoder"]),
    )
    codec = MelCodec(cfg)
    codec.net.load_state_dict(state_dict, strict=True)
    return codec.eval().requires_grad_(False)
