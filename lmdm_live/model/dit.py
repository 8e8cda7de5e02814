"""The Stable Audio Open Small diffusion transformer, written so its pieces can be driven token by token.

Parameter names follow SAOS's checkpoint (`model.model.*` without the prefix), so a real checkpoint loads
without renaming. The SAOS forward (`DiT.forward`) is one composition of the pieces; the streaming LMDM
(`lmdm.py`) composes the same pieces differently: context tokens through `to_input_add_embed`, explicit RoPE
positions, and attention over cached keys and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import int8


@dataclass(frozen=True)
class DiTConfig:
    io_channels: int = 64
    embed_dim: int = 1024
    depth: int = 16
    num_heads: int = 8
    cond_token_dim: int = 768
    global_cond_dim: int = 768
    ff_mult: int = 4
    input_add_dim: int = 0  # LMDM: [context mask (1); clean context (io); extra controls...]; 0 = plain SAOS
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.head_dim < self.rope_dim:
            raise ValueError(
                f"head dim {self.head_dim} must be >= the rotary dim {self.rope_dim} (SAOS rule)"
            )
        if self.input_add_dim and self.input_add_dim < 1 + self.io_channels:
            raise ValueError(f"input_add_dim must be 0 or >= 1 + io_channels ({1 + self.io_channels})")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rope_dim(self) -> int:
        """Rotated dims per head: SAOS rotates max(head_dim // 2, 32) of them."""
        return max(self.head_dim // 2, 32)

    @property
    def extra_add_channels(self) -> int:
        return max(self.input_add_dim - 1 - self.io_channels, 0)


SAOS_DIT = DiTConfig()


def _find_onednn_linear():
    """oneDNN's fused linear, when this torch build has it: at the few dozen rows of a cached denoising
    step it runs about a third faster than the default CPU GEMM (measured on two cores, see docs)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None:
        return None
    try:
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        if not torch.allclose(op(x, w, None, "none", [], ""), F.linear(x, w)):
            return None
    except (RuntimeError, NotImplementedError):
        return None
    return op


_ONEDNN_LINEAR = _find_onednn_linear()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear, through oneDNN for CPU inference (no autograd through that path)."""
    if (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_grad_enabled()
    ):
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def lin(m: nn.Linear, x: Tensor) -> Tensor:
    """m(x) on a step's path: int8 where the layer was quantised (`model/int8.py`), else `linear`."""
    packed = m.__dict__.get(int8.ATTR)
    if packed is not None and x.device.type == "cpu" and not torch.is_grad_enabled():
        return int8.linear(x, packed)
    return linear(x, m.weight, m.bias)


def pointwise(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """A kernel-1 Conv1d on (B, C, N) as a linear: torch's CPU conv takes a slow path at a few frames."""
    return linear(x.transpose(1, 2), conv.weight[:, :, 0], conv.bias).transpose(1, 2)


class LayerNorm(nn.Module):
    """SAOS's bias-free LayerNorm: learned gamma, zero beta kept as a buffer (it is in the checkpoint)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, self.eps)


class FourierFeatures(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features))

    def forward(self, x: Tensor) -> Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class Rope(NamedTuple):
    """RoPE tables over the whole head (N, head_dim), float32, for explicit positions.

    SAOS rotates the first rope_dim dims with NeoX's rotate_half and passes the rest through. Written as
    x*cos + x[perm]*sin with cos = [cos, cos, 1..] and sin = [-sin, sin, 0..], it is three ops per tensor.
    """

    cos: Tensor
    sin: Tensor
    perm: Tensor


class KVSlot(NamedTuple):
    """One layer's cached keys/values (B, H, room, Dh): `length` valid frames, then room for the queries.

    Attention writes the queries' own keys/values right after the valid frames and attends to the
    [start, length + n) view: no concatenation, no allocation per step. `start` > 0 keeps the oldest cached
    frames out of a step's sight (a Block-Causal target sees fewer chunks than the cache holds).
    """

    k: Tensor
    v: Tensor
    length: int
    start: int = 0


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0, head_dim: int | None = None) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))
        self.dim, self.head_dim = dim, head_dim or dim

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin tables (N, rope_dim) in float32 for explicit (possibly negative) positions."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq.float()[None, :]
        freqs = torch.cat([freqs, freqs], dim=-1)
        return freqs.cos(), freqs.sin()

    def tables(self, positions: Tensor) -> Rope:
        cos, sin = self.cos_sin(positions)
        n, d, half, rest = cos.shape[0], self.dim, self.dim // 2, self.head_dim - self.dim
        cos_full = torch.cat([cos, cos.new_ones(n, rest)], dim=-1)
        sin_full = torch.cat([-sin[:, :half], sin[:, half:], sin.new_zeros(n, rest)], dim=-1)
        perm = torch.cat([torch.arange(half, d), torch.arange(half), torch.arange(d, self.head_dim)])
        return Rope(cos_full, sin_full, perm.to(cos.device))


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate x (..., N, head_dim) by the table's positions (in float32, like SAOS)."""
    xf = x.float()
    out = xf * rope.cos + xf.index_select(-1, rope.perm) * rope.sin
    return out.to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6)

    def kv(self, x: Tensor, rope: Rope) -> tuple[Tensor, Tensor]:
        """Post-norm, post-RoPE keys and values of x (B, H, N, Dh), without attending."""
        b, n, _ = x.shape
        hd = self.head_dim
        kv = linear(x, self.to_qkv.weight[x.shape[-1] :]).view(b, n, 2, self.heads, hd)
        k = F.layer_norm(kv[:, :, 0], (hd,), self.k_norm.weight, self.k_norm.bias, 1e-6).transpose(1, 2)
        return apply_rope(k, rope), kv[:, :, 1].transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        rope: Rope,
        prefix: KVSlot | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend x's queries to [cached prefix | x] keys; also return x's own post-norm, post-RoPE k and v.

        Written with functional calls on the module's weights: at a few dozen tokens per step the per-call
        overhead of nested modules is a measurable share of a denoising step on a CPU.
        """
        b, n, _ = x.shape
        hd = self.head_dim
        qkv = lin(self.to_qkv, x).view(b, n, 3, self.heads, hd)
        q = F.layer_norm(qkv[:, :, 0], (hd,), self.q_norm.weight, self.q_norm.bias, 1e-6).transpose(1, 2)
        k = F.layer_norm(qkv[:, :, 1], (hd,), self.k_norm.weight, self.k_norm.bias, 1e-6).transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)  # (B, H, N, Dh)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if prefix is not None:
            start, end = prefix.length, prefix.length + n
            if end > prefix.k.shape[2]:
                raise ValueError(f"KV cache has room for {prefix.k.shape[2] - start} query tokens, got {n}")
            # the cache holds values, never a graph: a training rollout's exit step writes detached keys
            prefix.k[:, :, start:end].copy_(k.detach())
            prefix.v[:, :, start:end].copy_(v.detach())
            if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
                # backward must not read the buffers later steps overwrite: attend to a fresh copy
                kk = torch.cat([prefix.k[:, :, prefix.start : start], k], dim=2)
                vv = torch.cat([prefix.v[:, :, prefix.start : start], v], dim=2)
            else:
                kk, vv = prefix.k[:, :, prefix.start : end], prefix.v[:, :, prefix.start : end]
        else:
            kk, vv = k, v
        out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        return lin(self.to_out, out.transpose(1, 2).reshape(b, n, -1)), k, v


class CrossAttention(nn.Module):
    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6)

    def kv(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Keys/values of the conditioning tokens: computed once per conditioning, reused by every step."""
        b, s, _ = ctx.shape
        k, v = self.to_kv(ctx).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.k_norm(k), v

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        b, n, _ = x.shape
        hd = self.head_dim
        q = lin(self.to_q, x).view(b, n, self.heads, hd)
        q = F.layer_norm(q, (hd,), self.q_norm.weight, self.q_norm.bias, 1e-6).transpose(1, 2)
        k, v = kv
        if k.shape[0] != b:  # one conditioning shared by a batch
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        return lin(self.to_out, out.transpose(1, 2).reshape(b, n, -1))


class GLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.silu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.ff = nn.Sequential(GLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        glu, out = self.ff[0].proj, self.ff[2]
        a, gate = lin(glu, x).chunk(2, dim=-1)
        return lin(out, a * F.silu(gate))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.pre_norm = LayerNorm(d)
        self.self_attn = SelfAttention(d, cfg.head_dim)
        self.cross_attend_norm = LayerNorm(d)
        self.cross_attn = CrossAttention(d, cfg.head_dim)
        self.ff_norm = LayerNorm(d)
        self.ff = FeedForward(d, cfg.ff_mult)

    def forward(
        self,
        h: Tensor,
        rope: Rope,
        cross_kv: tuple[Tensor, Tensor],
        prefix: KVSlot | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        d = (h.shape[-1],)
        n1, n2, n3 = self.pre_norm, self.cross_attend_norm, self.ff_norm
        a, k, v = self.self_attn.forward(F.layer_norm(h, d, n1.gamma, n1.beta, n1.eps), rope, prefix, mask)
        h = h + a
        h = h + self.cross_attn.forward(F.layer_norm(h, d, n2.gamma, n2.beta, n2.eps), cross_kv)
        h = h + self.ff.forward(F.layer_norm(h, d, n3.gamma, n3.beta, n3.eps))
        return h, k, v


class ContinuousTransformer(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.project_in = nn.Linear(cfg.io_channels, cfg.embed_dim, bias=False)
        self.project_out = nn.Linear(cfg.embed_dim, cfg.io_channels, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(cfg.rope_dim, cfg.rope_base, cfg.head_dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.depth))


CrossKV = list[tuple[Tensor, Tensor]]
"""Per-layer cross-attention keys and values of one conditioning."""


class DiT(nn.Module):
    """SAOS DiT. `forward` is stable-audio-tools' semantics; the other methods are the streaming pieces."""

    def __init__(self, cfg: DiTConfig = SAOS_DIT) -> None:
        super().__init__()
        self.cfg = cfg
        d, io = cfg.embed_dim, cfg.io_channels
        self.timestep_features = FourierFeatures(1, 256)
        self.to_timestep_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.to_cond_embed = nn.Sequential(
            nn.Linear(cfg.cond_token_dim, d, bias=False), nn.SiLU(), nn.Linear(d, d, bias=False)
        )
        if cfg.global_cond_dim:
            self.to_global_embed = nn.Sequential(
                nn.Linear(cfg.global_cond_dim, d, bias=False), nn.SiLU(), nn.Linear(d, d, bias=False)
            )
        self.transformer = ContinuousTransformer(cfg)
        self.preprocess_conv = nn.Conv1d(io, io, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(io, io, 1, bias=False)
        if cfg.input_add_dim:
            self.to_input_add_embed = nn.Linear(cfg.input_add_dim, d, bias=False)
            nn.init.zeros_(self.to_input_add_embed.weight)
        nn.init.zeros_(self.preprocess_conv.weight)
        nn.init.zeros_(self.postprocess_conv.weight)

    # --- pieces -------------------------------------------------------------------------------------------

    @property
    def layers(self) -> nn.ModuleList:
        return self.transformer.layers

    def cross_kv(self, cond_tokens: Tensor) -> CrossKV:
        ctx = self.to_cond_embed(cond_tokens)
        return [layer.cross_attn.kv(ctx) for layer in self.layers]

    def global_token(self, t: Tensor, global_cond: Tensor | None) -> Tensor:
        """The timestep (+ global conditioning) token, (B, 1, D). SAOS gives it RoPE position 0."""
        g = self.to_timestep_embed(self.timestep_features(t[:, None].to(self.timestep_features.weight.dtype)))
        if global_cond is not None and self.cfg.global_cond_dim:
            g = g + self.to_global_embed(global_cond)
        return g[:, None, :]

    def noisy_tokens(self, x: Tensor) -> Tensor:
        """Noisy latents (B, io, N) -> tokens (B, N, D) through the pretrained input path."""
        x = x + pointwise(self.preprocess_conv, x)
        return self.transformer.project_in(x.transpose(1, 2))

    def add_tokens(self, add: Tensor) -> Tensor:
        """LMDM input_add channels (B, N, input_add_dim) -> tokens (B, N, D). The channels (tempo grid, sketch,
        accompaniment) are built in float32; a bfloat16 DiT takes them in its own dtype."""
        return self.to_input_add_embed(add.to(self.to_input_add_embed.weight.dtype))

    def output(self, h: Tensor) -> Tensor:
        """Latent-frame tokens (B, N, D) -> velocity (B, io, N)."""
        y = self.transformer.project_out(h).transpose(1, 2)
        return y + pointwise(self.postprocess_conv, y)

    def rope(self, positions: Tensor) -> Rope:
        return self.transformer.rotary_pos_emb.tables(positions)

    def run(
        self,
        h: Tensor,
        rope: Rope,
        cross: CrossKV,
        prefix: list[KVSlot] | None = None,
        mask: Tensor | None = None,
        keep: slice | None = None,
        kv_only: bool = False,
    ) -> tuple[Tensor | None, list[tuple[Tensor, Tensor]]]:
        """All layers over tokens h, attending to per-layer prefix K/V; returns h and the kept tokens' K/V.

        With `kv_only` the caller wants only the K/V (a context pass): the last layer stops at its keys and
        values and no hidden state is returned.
        """
        kept: list[tuple[Tensor, Tensor]] = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if kv_only and i == last:
                k, v = layer.self_attn.kv(layer.pre_norm(h), rope)
                kept.append((k[:, :, keep], v[:, :, keep]))
                return None, kept
            h, k, v = layer(h, rope, cross[i], None if prefix is None else prefix[i], mask)
            if keep is not None:
                kept.append((k[:, :, keep], v[:, :, keep]))
        return h, kept

    # --- SAOS forward ---------------------------------------------------------------------------------------

    def forward(
        self, x: Tensor, t: Tensor, cross_attn_cond: Tensor, global_cond: Tensor | None = None
    ) -> Tensor:
        """stable-audio-tools' DiT: x (B,io,L), t (B,), cross_attn_cond (B,S,cond), global_cond (B,g) -> v."""
        n = x.shape[-1]
        h = torch.cat([self.noisy_tokens(x), self.global_token(t, global_cond)], dim=1)
        positions = torch.cat([torch.arange(1, n + 1), torch.zeros(1, dtype=torch.long)]).to(x.device)
        h, _ = self.run(h, self.rope(positions), self.cross_kv(cross_attn_cond))
        return self.output(h[:, :n])
