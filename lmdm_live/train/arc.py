"""ARC-Forcing (stage 2): adversarial post-training on the model's own autoregressive rollouts.

The generator rolls out R blocks the way it streams (each block from the blocks it generated before, with
a few ping-pong steps), exiting at a random step k with gradient through that step only. A discriminator
(a bidirectional DiT trunk plus a ConvNeXt head over the rolled-out region) scores re-noised real and
generated windows with a relativistic loss; a contrastive term teaches it to tell the right conditioning
from a rolled one, so the generator is pushed to follow the prompt, not only to sound real. Rollouts use
the masked window pass (`LMDM.window_velocity`), which the KV caches reproduce exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.bundle import LMDMModel
from ..model.dit import DiT, DiTConfig
from ..model.lmdm import LMDM, Conditioning
from ..model.samplers import logsnr_schedule
from .stage1 import LatentSet, context_dropout

# --- losses ---------------------------------------------------------------------------------------------


def relativistic_g_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """The generator wants its rollouts scored above the real windows they are paired with."""
    return F.softplus(d_real - d_fake).mean()


def relativistic_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    return F.softplus(d_fake - d_real).mean()


def contrastive_d_loss(d_matched: Tensor, d_rolled: Tensor) -> Tensor:
    """Real audio with the wrong conditioning must score below the same audio with the right one."""
    return F.softplus(d_rolled - d_matched).mean()


# --- discriminator ----------------------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.dw = nn.Conv1d(ch, ch, 7, padding=3, groups=ch)
        self.norm = nn.LayerNorm(ch)
        self.pw1, self.pw2 = nn.Linear(ch, 4 * ch), nn.Linear(4 * ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dw(x).transpose(1, 2))
        return x + self.pw2(F.gelu(self.pw1(y))).transpose(1, 2)


class ConvNeXtHead(nn.Module):
    """Token features (B, D, N) -> patch scores (B, N/4): stages of 128/256/512 channels, strides 1, 2, 2."""

    def __init__(
        self, dim: int, widths: tuple[int, ...] = (128, 256, 512), strides: tuple[int, ...] = (1, 2, 2)
    ):
        super().__init__()
        self.proj = nn.Conv1d(dim, widths[0], 7, padding=3)
        layers: list[nn.Module] = []
        ch = widths[0]
        for w, s in zip(widths, strides, strict=True):
            if s > 1 or w != ch:
                layers.append(nn.Conv1d(ch, w, s, stride=s))
            layers += [ConvNeXtBlock(w), ConvNeXtBlock(w)]
            ch = w
        self.stages = nn.Sequential(*layers)
        self.out = nn.Conv1d(ch, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.stages(self.proj(x)))[:, 0]


class Discriminator(nn.Module):
    """A bidirectional DiT truncated after `layers` blocks, then a ConvNeXt head on the rollout region."""

    def __init__(self, cfg: DiTConfig, layers: int, head_widths: tuple[int, ...] = (128, 256, 512)) -> None:
        super().__init__()
        if not 1 <= layers <= cfg.depth:
            raise ValueError(f"layers must be in 1..{cfg.depth}")
        self.dit = DiT(DiTConfig(**{**cfg.__dict__, "depth": layers, "input_add_dim": 0}))
        self.head = ConvNeXtHead(cfg.embed_dim, head_widths)

    @classmethod
    def from_generator(cls, model: LMDMModel, layers: int, **kw) -> Discriminator:
        """Initialise the trunk from the generator's own DiT (its first `layers` blocks)."""
        d = cls(model.dit.cfg, layers, **kw)
        own = {k: v for k, v in model.dit.state_dict().items() if not k.startswith("to_input_add_embed")}
        missing, _ = d.dit.load_state_dict(own, strict=False)
        if missing:
            raise ValueError(f"discriminator trunk is missing {missing[:3]}")
        return d

    def forward(self, y: Tensor, s: Tensor, cross: Tensor, glob: Tensor | None, start: int) -> Tensor:
        """Scores for frames [start:] of the re-noised window y (B, io, L) at noise levels s (B,)."""
        n = y.shape[-1]
        h = torch.cat([self.dit.noisy_tokens(y), self.dit.global_token(s, glob)], dim=1)
        positions = torch.cat([torch.arange(1, n + 1), torch.zeros(1, dtype=torch.long)]).to(y.device)
        h, _ = self.dit.run(h, self.dit.rope(positions), self.dit.cross_kv(cross))
        return self.head(h[:, start:n].transpose(1, 2))


# --- the training step --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ARCConfig:
    rounds: int = 4  # R blocks rolled out per window
    steps: int = 6  # S: sampling steps the exit step is drawn from (1..S-1)
    batch: int = 4
    lr_g: float = 1e-6
    lr_d: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    lambda_c: float = 1.0
    p_uncond: float = 0.25
    p_partial: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0


def _slide(frames: Tensor, block: Tensor, extras: Tensor | None = None) -> Tensor:
    """The context window after `block`: oldest frames out, the block (with its extras) in."""
    e = frames.shape[1] - 1 - block.shape[1]
    if extras is None:
        extras = frames.new_zeros(block.shape[0], e, block.shape[-1])
    new = torch.cat([torch.ones_like(block[:, :1]), block, extras.to(block)], dim=1)
    return torch.cat([frames[:, :, block.shape[-1] :], new], dim=2)


def rollout(
    lmdm: LMDM,
    frames: Tensor,
    cond: Conditioning,
    rounds: int,
    steps: int,
    gen: torch.Generator,
    extras: Tensor | None = None,
) -> Tensor:
    """R blocks, each from the previous ones; gradient only through each block's exit step.

    `extras` (B, E, R*T): each rolled-out block's extra channels (tempo, sketch, accompaniment)."""
    ts = logsnr_schedule(steps)
    b, io, t_len = frames.shape[0], lmdm.dit.cfg.io_channels, lmdm.cfg.block_frames
    blocks = []
    for r in range(rounds):
        ext = None if extras is None else extras[..., r * t_len : (r + 1) * t_len]
        k = int(torch.randint(1, steps, (1,), generator=gen))  # exit after k steps, 1..S-1
        x = torch.randn(b, io, t_len, generator=gen).to(frames)
        with torch.no_grad():
            for i in range(k - 1):
                t = torch.full((b,), ts[i]).to(frames)
                x0 = x - ts[i] * lmdm.window_velocity(frames, x, t, cond, ext)
                x = (1 - ts[i + 1]) * x0 + ts[i + 1] * torch.randn(x.shape, generator=gen).to(x)
        t = torch.full((b,), ts[k - 1]).to(frames)
        block = x - ts[k - 1] * lmdm.window_velocity(frames, x, t, cond, ext)
        blocks.append(block)
        frames = _slide(frames, block.detach(), ext)
    return torch.cat(blocks, dim=2)


class ARCTrainer:
    """Alternating generator / discriminator steps on windows of C + R*T real frames."""

    def __init__(self, model: LMDMModel, disc: Discriminator, cfg: ARCConfig) -> None:
        self.model, self.disc, self.cfg = model, disc, cfg
        self.lmdm = LMDM(model.dit, model.lmdm)
        self.g_params = list(model.net.parameters())
        self.d_params = list(disc.parameters())
        for p in self.g_params + self.d_params:
            p.requires_grad_(True)
        model.net.train()
        disc.train()
        opt = {"betas": cfg.betas, "weight_decay": cfg.weight_decay}
        self.opt_g = torch.optim.AdamW(self.g_params, lr=cfg.lr_g, **opt)
        self.opt_d = torch.optim.AdamW(self.d_params, lr=cfg.lr_d, **opt)
        self.step = 0

    def _batch(self, data: LatentSet, gen: torch.Generator):
        c, t_len = self.lmdm.cfg.context_frames, self.lmdm.cfg.block_frames
        n = c + self.cfg.rounds * t_len
        layout = self.model.layout
        p = next(self.model.net.parameters())
        e = self.model.dit.cfg.extra_add_channels
        if layout.channels:
            from .windows import ExtrasConfig, window_batch

            real, tokens, ext = window_batch(data, layout, ExtrasConfig(), self.cfg.batch, c, n - c, gen)
            extras = real.new_zeros(real.shape[0], e, n)
            extras[:, : ext.shape[1]] = ext
            extras = extras.to(p.device, p.dtype)
        else:
            real, tokens = data.batch(self.cfg.batch, n, gen)
            extras = None
        real, tokens = real.to(p.device, p.dtype), tokens.to(p.device, p.dtype)
        b, io, _ = real.shape
        ctx_extras = real.new_zeros(b, e, c) if extras is None else extras[..., :c]
        frames = torch.cat([real.new_ones(b, 1, c), real[..., :c], ctx_extras], dim=1)
        frames = context_dropout(frames, t_len, self.cfg.p_uncond, self.cfg.p_partial, gen)
        real = torch.cat([frames[:, 1 : 1 + io], real[..., c:]], dim=2)  # Y = X' (context as the G saw it)
        cross, glob = self.model.net.conditioning(tokens, [self.model.seconds_total] * b)
        return real, frames, cross, glob, None if extras is None else extras[..., c:]

    def _scores(self, real: Tensor, fake: Tensor, cross: Tensor, glob: Tensor, gen: torch.Generator):
        """Paired re-noising: one noise level and one noise for the real and the generated window."""
        c = self.lmdm.cfg.context_frames
        s = torch.sigmoid(torch.randn(real.shape[0], generator=gen)).to(real)
        eps = torch.randn(real.shape, generator=gen).to(real)
        y_s = (1 - s[:, None, None]) * real + s[:, None, None] * eps
        f_s = (1 - s[:, None, None]) * fake + s[:, None, None] * eps
        return self.disc(y_s, s, cross, glob, c), self.disc(f_s, s, cross, glob, c), y_s, s

    def g_step(self, data: LatentSet) -> dict:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        real, frames, cross, glob, target_extras = self._batch(data, gen)
        cond = Conditioning(self.model.dit.cross_kv(cross), glob)
        blocks = rollout(self.lmdm, frames, cond, self.cfg.rounds, self.cfg.steps, gen, target_extras)
        fake = torch.cat([real[..., : self.lmdm.cfg.context_frames], blocks], dim=2)
        for p in self.d_params:
            p.requires_grad_(False)
        # the discriminator's view of the conditioning carries no gradient back into the generator
        d_real, d_fake, _, _ = self._scores(real, fake, cross.detach(), glob.detach(), gen)
        loss = relativistic_g_loss(d_real, d_fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.g_params, self.cfg.grad_clip)
        self.opt_g.step()
        for p in self.d_params:
            p.requires_grad_(True)
        self.step += 1
        return {"loss_g": float(loss.detach())}

    def d_step(self, data: LatentSet) -> dict:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        real, frames, cross, glob, target_extras = self._batch(data, gen)
        with torch.no_grad():
            cond = Conditioning(self.model.dit.cross_kv(cross), glob)
            blocks = rollout(self.lmdm, frames, cond, self.cfg.rounds, self.cfg.steps, gen, target_extras)
        fake = torch.cat([real[..., : self.lmdm.cfg.context_frames], blocks], dim=2).detach()
        cross, glob = cross.detach(), glob.detach()
        d_real, d_fake, y_s, s = self._scores(real, fake, cross, glob, gen)
        rolled = torch.roll(cross, 1, dims=0)  # c~: each window with another window's prompt
        d_rolled = self.disc(y_s, s, rolled, glob, self.lmdm.cfg.context_frames)
        loss_rel = relativistic_d_loss(d_real, d_fake)
        loss_con = contrastive_d_loss(d_real, d_rolled)
        loss = loss_rel + self.cfg.lambda_c * loss_con
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.d_params, self.cfg.grad_clip)
        self.opt_d.step()
        self.step += 1
        return {"loss_d": float(loss_rel.detach()), "loss_contrastive": float(loss_con.detach())}
