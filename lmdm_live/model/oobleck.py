"""Oobleck autoencoder (the VAE of Stable Audio Open Small) with an exact streaming decoder.

Module and parameter names follow the original so that ``state_dict()`` keys equal SAO-Small's
``pretransform.model.*`` keys (``encoder.layers.N...``, ``decoder.layers.N...``, ``weight_g``/``weight_v``).

Streaming: every convolution is run as a cached ("streaming") convolution that keeps its left context
in a fixed-size buffer. A causal model (``causal=True``: left padding, right-trimmed transposed convs)
then streams exactly with zero lookahead. The symmetric SAOS model streams exactly too: each layer's
right padding becomes a delay, so the output lags the input by ``latency_samples`` and ``flush()``
supplies the right padding at the end of a stream.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DecoderBlock",
    "EncoderBlock",
    "OobleckConfig",
    "OobleckDecoder",
    "OobleckEncoder",
    "OobleckVAE",
    "ResidualUnit",
    "SnakeBeta",
    "VAEBottleneck",
    "WNConv1d",
    "WNConvTranspose1d",
    "fold_weight_norm",
    "load_oobleck_state_dict",
]

_DILATIONS = (1, 3, 9)


@dataclass(frozen=True)
class OobleckConfig:
    """Shape of an Oobleck autoencoder. ``latent_dim`` is the VAE latent; the encoder emits twice that."""

    in_channels: int = 2
    out_channels: int = 2
    channels: int = 128
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    latent_dim: int = 64
    use_snake: bool = True
    final_tanh: bool = False
    causal: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_mults", tuple(int(c) for c in self.c_mults))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if len(self.c_mults) != len(self.strides) or not self.strides:
            raise ValueError("c_mults and strides must be non-empty and of equal length")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be >= 1, got {self.strides}")
        # A symmetric transposed conv (k=2s, pad ceil(s/2)) yields n*s samples only for even s.
        if not self.causal and any(s % 2 for s in self.strides):
            raise ValueError(f"non-causal Oobleck needs even strides, got {self.strides}")

    @property
    def hop(self) -> int:
        """Audio samples per latent frame."""
        return math.prod(self.strides)

    @property
    def encoder_latent_dim(self) -> int:
        """Encoder output channels: mean and scale of the VAE posterior."""
        return 2 * self.latent_dim

    @property
    def decoder_latency_samples(self) -> int:
        """Right receptive field of the decoder in output samples: the delay of exact streaming."""
        if self.causal:
            return 0
        delay = 3  # first conv, k7, in latent frames
        for s in reversed(self.strides):
            delay = delay * s + math.ceil(s / 2) + sum(3 * d for d in _DILATIONS)
        return delay + 3  # last conv, k7

    @property
    def lookahead_frames(self) -> int:
        """Latent frames the streaming decoder must see beyond the audio it has returned."""
        return -(-self.decoder_latency_samples // self.hop)

    @classmethod
    def saos(cls) -> OobleckConfig:
        """Stable Audio Open Small's autoencoder (44.1 kHz stereo, hop 2048)."""
        return cls()

    @classmethod
    def small(cls, audio_channels: int = 1, causal: bool = False, channels: int = 32) -> OobleckConfig:
        """A decoder that runs many times faster than real time on two CPU cores (hop 1024)."""
        return cls(
            in_channels=audio_channels,
            out_channels=audio_channels,
            channels=channels,
            c_mults=(1, 2, 4, 8),
            strides=(4, 4, 8, 8),
            causal=causal,
        )

    @classmethod
    def from_dict(cls, d: dict) -> OobleckConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_sao_pretransform(cls, pt: dict) -> OobleckConfig:
        """Read the ``pretransform.config`` block of a stable-audio-tools model config."""
        enc, dec = pt["encoder"]["config"], pt["decoder"]["config"]
        if enc.get("latent_dim", 2 * dec["latent_dim"]) != 2 * dec["latent_dim"]:
            raise ValueError("a VAE encoder emits 2 x the decoder's latent_dim (mean and scale)")
        return cls(
            in_channels=enc["in_channels"],
            out_channels=dec["out_channels"],
            channels=dec["channels"],
            c_mults=dec["c_mults"],
            strides=dec["strides"],
            latent_dim=dec["latent_dim"],
            use_snake=dec.get("use_snake", False),
            final_tanh=dec.get("final_tanh", True),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["c_mults"], d["strides"] = list(self.c_mults), list(self.strides)
        return d


# --------------------------------------------------------------------------------------------- layers


class SnakeBeta(nn.Module):
    """Periodic activation ``x + sin²(e^alpha x) / (e^beta + 1e-9)``, per-channel log-scale alpha, beta."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(e^alpha, 1 / (e^beta + 1e-9)), shaped (C, 1) to broadcast over (B, C, T)."""
        return self.alpha.exp()[:, None], (1.0 / (self.beta.exp() + 1e-9))[:, None]

    def forward(self, x: Tensor) -> Tensor:
        freq, inv_beta = self.coefficients()
        needs_grad = x.requires_grad or self.alpha.requires_grad or self.beta.requires_grad
        if torch.is_grad_enabled() and needs_grad:
            s = torch.sin(x * freq)
            return x + s * s * inv_beta  # same rounding steps as the in-place path
        return snake_inplace(x, freq, inv_beta)


def snake_inplace(x: Tensor, freq: Tensor, inv_beta: Tensor) -> Tensor:
    """Inference path: one temporary, updated in place (this activation is a large share of decode time)."""
    t = x * freq
    torch.sin(t, out=t)
    t.mul_(t)
    return t.mul_(inv_beta).add_(x)


def _activation(channels: int, use_snake: bool) -> nn.Module:
    return SnakeBeta(channels) if use_snake else nn.ELU()


class _WeightNorm(nn.Module):
    """Weight-normed conv parameters stored as ``weight_g``/``weight_v`` (the names SAOS uses).

    ``weight = g * v / ‖v‖`` with the norm over all dims but the first (``torch.nn.utils.weight_norm``
    with ``dim=0``). ``fold()`` replaces g, v by a plain ``weight`` for inference.
    """

    def __init__(self, weight_shape: tuple[int, int, int], out_channels: int, bias: bool):
        super().__init__()
        fan_in = weight_shape[1] * weight_shape[2]
        if bias:
            bound = 1.0 / math.sqrt(fan_in)
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        v = torch.empty(weight_shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))
        self.weight_g = nn.Parameter(_norm_except_dim0(v))
        self.weight_v = nn.Parameter(v)
        self.folded = False

    def get_weight(self) -> Tensor:
        if self.folded:
            return self.weight
        return self.weight_v * (self.weight_g / _norm_except_dim0(self.weight_v))

    def weight_key(self) -> tuple[int, ...]:
        """Changes whenever the weight may have changed (new tensors or in-place updates)."""
        ps = (self.weight,) if self.folded else (self.weight_g, self.weight_v)
        return tuple(x for p in ps for x in (id(p), p._version))

    @torch.no_grad()
    def fold(self) -> None:
        """Turn g, v into one plain ``weight`` parameter; outputs stay identical."""
        if self.folded:
            return
        w = self.get_weight().detach().clone()
        del self.weight_g, self.weight_v
        self.weight = nn.Parameter(w)
        self.folded = True


def _norm_except_dim0(v: Tensor) -> Tensor:
    return v.norm(dim=tuple(range(1, v.dim())), keepdim=True)


class WNConv1d(_WeightNorm):
    """Weight-normed Conv1d with explicit (left, right) padding so that one module serves both
    the symmetric SAOS layout and the causal one."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        padding: tuple[int, int] = (0, 0),
        bias: bool = True,
    ):
        super().__init__((out_channels, in_channels, kernel_size), out_channels, bias)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.padding
        if left == right:
            return F.conv1d(x, self.get_weight(), self.bias, self.stride, left, self.dilation)
        return F.conv1d(F.pad(x, (left, right)), self.get_weight(), self.bias, self.stride, 0, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
            f"d={self.dilation}, pad={self.padding}"
        )


class WNConvTranspose1d(_WeightNorm):
    """Weight-normed ConvTranspose1d; ``crop`` (left, right) trims the full ``(n-1)s+k`` output."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        crop: tuple[int, int],
        bias: bool = True,
    ):
        super().__init__((in_channels, out_channels, kernel_size), out_channels, bias)
        if not stride <= kernel_size <= 2 * stride:
            raise ValueError("streaming needs stride <= kernel_size <= 2 * stride")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.crop = kernel_size, stride, crop

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.crop
        if left == right:
            return F.conv_transpose1d(x, self.get_weight(), self.bias, self.stride, left)
        y = F.conv_transpose1d(x, self.get_weight(), self.bias, self.stride)
        return y[..., left : y.shape[-1] - right]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
            f"crop={self.crop}"
        )


def _conv_pad(kernel_size: int, dilation: int, causal: bool) -> tuple[int, int]:
    span = (kernel_size - 1) * dilation
    return (span, 0) if causal else (span // 2, span - span // 2)


class ResidualUnit(nn.Module):
    """act → conv k7 (dilated) → act → conv k1, plus the input."""

    def __init__(self, channels: int, dilation: int, use_snake: bool, causal: bool):
        super().__init__()
        self.channels = channels
        self.layers = nn.Sequential(
            _activation(channels, use_snake),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=_conv_pad(7, dilation, causal)),
            _activation(channels, use_snake),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool, causal: bool):
        super().__init__()
        pad = (stride, 0) if causal else (math.ceil(stride / 2),) * 2
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, d, use_snake, causal) for d in _DILATIONS),
            _activation(in_channels, use_snake),
            WNConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=pad),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool, causal: bool):
        super().__init__()
        crop = (0, stride) if causal else (math.ceil(stride / 2),) * 2
        self.layers = nn.Sequential(
            _activation(in_channels, use_snake),
            WNConvTranspose1d(in_channels, out_channels, 2 * stride, stride, crop),
            *(ResidualUnit(out_channels, d, use_snake, causal) for d in _DILATIONS),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class OobleckEncoder(nn.Module):
    """Audio (B, in_channels, T) → (B, 2·latent_dim, T / hop)."""

    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        self.cfg = cfg
        ch = [cfg.channels * m for m in (1, *cfg.c_mults)]
        self.layers = nn.Sequential(
            WNConv1d(cfg.in_channels, ch[0], 7, padding=_conv_pad(7, 1, cfg.causal)),
            *(
                EncoderBlock(ch[i], ch[i + 1], s, cfg.use_snake, cfg.causal)
                for i, s in enumerate(cfg.strides)
            ),
            _activation(ch[-1], cfg.use_snake),
            WNConv1d(ch[-1], cfg.encoder_latent_dim, 3, padding=_conv_pad(3, 1, cfg.causal)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    """Latents (B, latent_dim, n) → audio (B, out_channels, n·hop)."""

    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        self.cfg = cfg
        ch = [cfg.channels * m for m in (1, *cfg.c_mults)]
        depth = len(cfg.strides)
        self.layers = nn.Sequential(
            WNConv1d(cfg.latent_dim, ch[-1], 7, padding=_conv_pad(7, 1, cfg.causal)),
            *(
                DecoderBlock(ch[i], ch[i - 1], cfg.strides[i - 1], cfg.use_snake, cfg.causal)
                for i in range(depth, 0, -1)
            ),
            _activation(ch[0], cfg.use_snake),
            WNConv1d(ch[0], cfg.out_channels, 7, padding=_conv_pad(7, 1, cfg.causal), bias=False),
            nn.Tanh() if cfg.final_tanh else nn.Identity(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


class VAEBottleneck(nn.Module):
    """Splits encoder output into mean and scale; ``std = softplus(scale) + 1e-4``."""

    @staticmethod
    def posterior(h: Tensor) -> tuple[Tensor, Tensor]:
        mean, scale = h.chunk(2, dim=1)
        return mean, F.softplus(scale) + 1e-4

    @staticmethod
    def kl(mean: Tensor, std: Tensor) -> Tensor:
        """KL to N(0, I), summed over channels, averaged over batch and time (as in training)."""
        var = std.square()
        return (mean.square() + var - var.log() - 1).sum(1).mean()

    def forward(self, h: Tensor, sample: bool, generator: torch.Generator | None = None) -> Tensor:
        mean, std = self.posterior(h)
        if not sample:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * eps


class OobleckVAE(nn.Module):
    """Encoder + VAE bottleneck + decoder; ``state_dict()`` keys are SAOS's ``pretransform.model.*``."""

    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = OobleckEncoder(cfg)
        self.bottleneck = VAEBottleneck()
        self.decoder = OobleckDecoder(cfg)

    def encode(self, audio: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Audio (B, ch, T) → latents (B, latent_dim, T/hop). ``sample=False`` returns the posterior mean,
        which is deterministic; SAOS's training pipeline samples."""
        return self.bottleneck(self.encoder(audio), sample, generator)

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)


# ------------------------------------------------------------------------------------- weights, loading


def fold_weight_norm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every weight norm folded into a plain weight (faster, same outputs).

    The folded model's conv keys become ``...weight``; ``load_oobleck_state_dict`` still loads g/v into it.
    """
    model = model if inplace else copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, _WeightNorm):
            m.fold()
    return model


_PARAM_G, _PARAM_V = "parametrizations.weight.original0", "parametrizations.weight.original1"


def load_oobleck_state_dict(
    model: nn.Module, sd: dict[str, Tensor], strict: bool = True, prefix: str = "", assign: bool = False
):
    """Load an Oobleck state dict saved with old-style ``weight_g``/``weight_v`` names, with
    ``torch.nn.utils.parametrizations`` names (``parametrizations.weight.original0/1``), or with plain
    folded ``weight``s, into an unfolded or folded ``model``.

    Only keys that start with ``prefix`` are used (e.g. ``"pretransform.model."`` for a SAO checkpoint).
    Returns torch's ``(missing_keys, unexpected_keys)``; ``strict`` raises on either.
    """
    src = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    gv: dict[str, dict[str, Tensor]] = {}
    plain: dict[str, Tensor] = {}
    for k, v in src.items():
        for tail, slot in ((_PARAM_G, "g"), (_PARAM_V, "v"), ("weight_g", "g"), ("weight_v", "v")):
            if k.endswith("." + tail) or k == tail:
                gv.setdefault(k[: len(k) - len(tail)], {})[slot] = v
                break
        else:
            plain[k] = v

    wn = {name + "." if name else "": m for name, m in model.named_modules() if isinstance(m, _WeightNorm)}
    out: dict[str, Tensor] = {}
    for k, v in plain.items():
        base = k[: -len("weight")] if k.endswith("weight") else None
        m = wn.get(base) if base is not None else None
        if m is not None and not m.folded:  # plain weight into a weight-normed conv: g = ‖w‖, v = w
            out[base + "weight_g"], out[base + "weight_v"] = _norm_except_dim0(v), v
        else:
            out[k] = v
    for base, d in gv.items():
        m = wn.get(base)
        if m is not None and m.folded:
            if "g" in d and "v" in d:
                out[base + "weight"] = d["v"] * (d["g"] / _norm_except_dim0(d["v"]))
            continue
        for slot, v in d.items():
            out[base + ("weight_g" if slot == "g" else "weight_v")] = v
    return model.load_state_dict(out, strict=strict, assign=assign)
