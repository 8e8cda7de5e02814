"""The Stable Audio Open Small diffusion transformer, written so its pieces can be driven token by token.

Parameter names follow SAOS's checkpoint (`model.model.*` without the prefix), so a real checkpoint loads
without renaming. The SAOS forward (`DiT.forward`) is one composition of the pieces; the streaming LMDM
(`lmdm.py`) composes the same pieces differently: context tokens through `to_input_add_embed`, explicit RoPE
positions, and attention over cached keys and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin tables (N, rope_dim) in float32 for explicit (possibly negative) positions."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq.float()[None, :]
        freqs = torch.cat([freqs, freqs], dim=-1)
        return freqs.cos(), freqs.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first rope_dim dims of x (..., N, head_dim) with NeoX rotate_half; the rest pass through."""
    d = cos.shape[-1]
    xr, xp = x[..., :d], x[..., d:]
    x1, x2 = xr.float().chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    xr = (xr.float() * cos + rot * sin).to(x.dtype)
    return torch.cat([xr, xp], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        prefix: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend x's queries to [prefix | x] keys; also return x's own post-norm, post-RoPE k and v."""
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B,H,N,Dh)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        if prefix is not None:
            kk, vv = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
        else:
            kk, vv = k, v
        out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1)), k, v


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
        q = self.q_norm(self.to_q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2))
        k, v = kv
        if k.shape[0] != b:  # one conditioning shared by a batch
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


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
        return self.ff(x)


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
        cos: Tensor,
        sin: Tensor,
        cross_kv: tuple[Tensor, Tensor],
        prefix: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.self_attn(self.pre_norm(h), cos, sin, prefix, mask)
        h = h + a
        h = h + self.cross_attn(self.cross_attend_norm(h), cross_kv)
        h = h + self.ff(self.ff_norm(h))
        return h, k, v


class ContinuousTransformer(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.project_in = nn.Linear(cfg.io_channels, cfg.embed_dim, bias=False)
        self.project_out = nn.Linear(cfg.embed_dim, cfg.io_channels, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(cfg.rope_dim, cfg.rope_base)
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
        x = x + self.preprocess_conv(x)
        return self.transformer.project_in(x.transpose(1, 2))

    def add_tokens(self, add: Tensor) -> Tensor:
        """LMDM input_add channels (B, N, input_add_dim) -> tokens (B, N, D)."""
        return self.to_input_add_embed(add)

    def output(self, h: Tensor) -> Tensor:
        """Latent-frame tokens (B, N, D) -> velocity (B, io, N)."""
        y = self.transformer.project_out(h).transpose(1, 2)
        return y + self.postprocess_conv(y)

    def rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.transformer.rotary_pos_emb.cos_sin(positions)

    def run(
        self,
        h: Tensor,
        rope: tuple[Tensor, Tensor],
        cross: CrossKV,
        prefix: list[tuple[Tensor, Tensor]] | None = None,
        mask: Tensor | None = None,
        keep: slice | None = None,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """All layers over tokens h, attending to per-layer prefix K/V; returns h and the kept tokens' K/V."""
        cos, sin = rope
        kept: list[tuple[Tensor, Tensor]] = []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, cos, sin, cross[i], None if prefix is None else prefix[i], mask)
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
