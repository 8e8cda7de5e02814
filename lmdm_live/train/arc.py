"""ARC-Forcing (stage 2): adversarial post-training on the model's own autoregressive rollouts.

The generator rolls out R blocks the way it streams: through the stream's own `BlockState` (KV cache,
slide, re-rotation, fused first step, recomputed stale chunks), each block from the blocks it generated
before, with a few ping-pong steps, exiting at a random step k with gradient through that step only (the
steps before it and the cache carry none). A discriminator (a bidirectional DiT trunk cut at 3/4 of its
depth plus a ConvNeXt head over the rolled-out region; it also reads the extra channels, so it hears the
accompaniment of a jam) scores re-noised real and generated windows with a relativistic loss; a
contrastive term teaches it to tell the right conditioning (text and accompaniment) from a rolled one, so
the generator is pushed to follow the prompt and the stem, not only to sound real.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.bundle import LMDMModel
from ..model.dit import DiT, DiTConfig
from ..model.lmdm import LMDM, BlockState, Conditioning
from ..model.samplers import SamplerSettings, sample_block
from .distributed import Rows, World, data_parallel
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
    """A bidirectional DiT truncated after `layers` blocks, then a ConvNeXt head on the rollout region.

    The trunk runs with full attention over the re-noised window. The window's extra channels (tempo,
    sketch, a jam's accompaniment) enter through `to_input_add_embed`, as in the generator, so the
    discriminator can judge whether the music fits them."""

    def __init__(self, cfg: DiTConfig, layers: int, head_widths: tuple[int, ...] = (128, 256, 512)) -> None:
        super().__init__()
        if not 1 <= layers <= cfg.depth:
            raise ValueError(f"layers must be in 1..{cfg.depth}")
        add = cfg.input_add_dim if cfg.extra_add_channels else 0
        self.dit = DiT(DiTConfig(**{**cfg.__dict__, "depth": layers, "input_add_dim": add}))
        self.head = ConvNeXtHead(cfg.embed_dim, head_widths)

    @staticmethod
    def depth_for(depth: int, fraction: float = 0.75) -> int:
        """The paper cuts the base model at 3/4 of its depth."""
        return max(1, min(depth, math.ceil(fraction * depth)))

    @classmethod
    def from_model(cls, model: LMDMModel, fraction: float = 0.75, **kw) -> Discriminator:
        """Initialise the trunk from `model`'s DiT: its first 3/4 of the blocks, run bidirectionally.

        The paper cuts a pretrained bidirectional base model. A model trained only as a streaming LMDM has
        no bidirectional sibling; its stage-1 weights run with full attention are the nearest thing (the
        blocks' weights are shared by every mask, and pass the whole window as SAOS pre-training did)."""
        d = cls(model.dit.cfg, cls.depth_for(model.dit.cfg.depth, fraction), **kw)
        own = model.dit.state_dict()
        if not d.dit.cfg.input_add_dim:
            own = {k: v for k, v in own.items() if not k.startswith("to_input_add_embed")}
        missing, _ = d.dit.load_state_dict(own, strict=False)
        if missing:
            raise ValueError(f"discriminator trunk is missing {missing[:3]}")
        return d

    def forward(
        self,
        y: Tensor,
        s: Tensor,
        cross: Tensor,
        glob: Tensor | None,
        start: int,
        extras: Tensor | None = None,
    ) -> Tensor:
        """Scores for frames [start:] of the re-noised window y (B, io, L) at noise levels s (B,), given
        the window's extra channels (B, E, L) when the model has them."""
        n = y.shape[-1]
        h = self.dit.noisy_tokens(y)
        if extras is not None and self.dit.cfg.input_add_dim:
            zeros = extras.new_zeros(extras.shape[0], 1 + y.shape[1], n)
            h = h + self.dit.add_tokens(torch.cat([zeros, extras], dim=1).transpose(1, 2))
        h = torch.cat([h, self.dit.global_token(s, glob)], dim=1)
        positions = torch.cat([torch.arange(1, n + 1), torch.zeros(1, dtype=torch.long)]).to(y.device)
        h, _ = self.dit.run(h, self.dit.rope(positions), self.dit.cross_kv(cross))
        return self.head(h[:, start:n].transpose(1, 2))


# --- rollouts through the stream's own state ------------------------------------------------------------------


@dataclass
class RolloutExtras:
    """A window's extra channels (B, E, C + R*T), the accompaniment in them fully visible, and how each
    block sees them: accompaniment up to t_f frames past that block's start, t_f fixed per row for the whole
    rollout, as a jam streams (the context's accompaniment refreshed each block, as the live input does)."""

    extras: Tensor
    accomp: slice | None = None  # the accompaniment's channels within the extras
    t_f: Tensor | None = None  # (B,) frames past each block start the accompaniment is visible
    before: Tensor | None = None  # (1, A, L) the accompaniment of the batch row before these rows

    def window(self, r: int, context: int, block: int) -> Tensor:
        """(B, E, C + T): block r's window of extras as the stream would have them when making block r."""
        w = self.extras[..., r * block : r * block + context + block]
        if self.accomp is None or self.t_f is None:
            return w
        visible = torch.arange(w.shape[-1], device=w.device)[None, :] < context + self.t_f[:, None].to(
            w.device
        )
        w = w.clone()
        w[:, self.accomp] = w[:, self.accomp] * visible[:, None, :].to(w)
        return w

    def rolled(self) -> Tensor:
        """The full extras with the accompaniment rolled by one inside the batch (the contrastive c~). When
        these are some rows of a larger batch, the first takes the accompaniment of the row `before` them."""
        if self.accomp is None:
            return self.extras
        out = self.extras.clone()
        acc = self.extras[:, self.accomp]
        if self.before is None:
            out[:, self.accomp] = torch.roll(acc, 1, dims=0)
        else:
            out[:, self.accomp] = torch.cat([self.before.to(acc), acc[:-1]])
        return out


def rollout(
    lmdm: LMDM,
    state: BlockState,
    cond: Conditioning,
    exits: Sequence[int],
    steps: int,
    gens: Sequence[torch.Generator],
    extras: RolloutExtras | None = None,
    rows: Rows | None = None,
) -> Tensor:
    """len(exits) blocks (B, io, R*T) through the stream's path, block r exiting after exits[r] of `steps`
    ping-pong steps with its generator gens[r]; gradient only through each block's exit step.

    With every exit = steps and the stream's per-block generators this is exactly what `LMDMStream` makes
    (the tests hold the two equal); the state is left as the stream would leave it.

    The state's rows are `rows` of a larger batch (a data-parallel process's share): the sampler then runs
    on the whole batch's noise, so its re-noising draws are the whole batch's, and only these rows are
    denoised (the others stay noise, computed by the processes that own them)."""
    settings = SamplerSettings("pingpong", steps=steps)
    c, t_len, io = lmdm.cfg.context_frames, lmdm.cfg.block_frames, lmdm.dit.cfg.io_channels
    rows = rows or Rows.all(state.frames.shape[0])
    grad = torch.is_grad_enabled()
    blocks = []
    for r, (k, gen) in enumerate(zip(exits, gens, strict=True)):
        target = None
        if extras is not None:
            win = extras.window(r, c, t_len)
            if extras.accomp is not None:
                lo = 1 + io + extras.accomp.start
                state.refresh(lo, lo + extras.accomp.stop - extras.accomp.start, win[:, extras.accomp, :c])
            target = win[..., c:]
        shape = (rows.total, io, t_len)
        noise = torch.randn(shape, generator=gen, dtype=torch.float32).to(lmdm.device, lmdm.dtype)
        with torch.no_grad():  # the context pass / bootstrap: the cache carries no gradient
            denoise = lmdm.denoiser(state, cond, gen, target)

        def step(x: Tensor, t: float, i: int, denoise=denoise, k=k) -> Tensor:
            with torch.set_grad_enabled(grad and i == k - 1):
                return rows.widen(denoise(rows.take(x), t, i))

        block = rows.take(sample_block(step, noise, settings, gen, exit=k))
        lmdm.advance(state, block, target)
        blocks.append(block)
    return torch.cat(blocks, dim=2)


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
    lambda_c: float | None = None  # None: the paper's 2 for Block-Causal, 1 for Enc-Dec
    p_uncond: float = 0.25
    p_partial: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0


@dataclass
class _Batch:
    """This process's rows of a step's batch (all of it in a single process)."""

    real: Tensor  # (b, io, C + R*T): Y = X' (the context as the generator saw it)
    frames: Tensor  # (b, 1+io+E, C): the generator's context window
    tokens: Tensor  # (b + 1, S, D): the rows' text tokens, then those of the batch row before the first
    extras: RolloutExtras | None


@dataclass
class _Conditioning:
    cross: Tensor
    glob: Tensor
    rolled: Tensor  # each row's cross-attention tokens from the row before it in the batch (c~)


class ARCTrainer:
    """Alternating generator / discriminator steps on windows of C + R*T real frames.

    With a `world` of several processes (under torchrun) each player's step is data-parallel: every draw is
    made for the whole batch, each process computes its rows, and DistributedDataParallel averages the
    gradients of the player that steps; the models must already be on the world's device."""

    def __init__(
        self, model: LMDMModel, disc: Discriminator, cfg: ARCConfig, world: World | None = None
    ) -> None:
        self.model, self.disc, self.cfg = model, disc, cfg
        self.world = world or World()
        self.rows = self.world.rows(cfg.batch)
        if self.world.distributed and model.lmdm.mode == "bidirectional":
            raise ValueError("the bidirectional mode draws its context noise per process: train it on one")
        self.lmdm = LMDM(model.dit, model.lmdm)
        self.lambda_c = (
            cfg.lambda_c if cfg.lambda_c is not None else (2.0 if model.lmdm.mode == "causal" else 1.0)
        )
        self.g_params = list(model.net.parameters())
        self.d_params = list(disc.parameters())
        for p in self.g_params + self.d_params:
            p.requires_grad_(True)
        model.net.train()
        disc.train()
        opt = {"betas": cfg.betas, "weight_decay": cfg.weight_decay}
        self.opt_g = torch.optim.AdamW(self.g_params, lr=cfg.lr_g, **opt)
        self.opt_d = torch.optim.AdamW(self.d_params, lr=cfg.lr_d, **opt)
        # each player's loss as a module over its own parameters only; the discriminator reads the trunk,
        # not the DiT's output layers, so some of its parameters see no gradient
        self.g_objective = data_parallel(model.net, self._g_loss, self.world)
        self.d_objective = data_parallel(disc, self._d_loss, self.world, find_unused=True)
        self.step = 0

    def _gen(self, seed: int | None) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step if seed is None else seed)

    def _batch(self, data: LatentSet, gen: torch.Generator) -> _Batch:
        """The step's windows, drawn for the whole batch; this process's rows read, and the row before them
        (whose prompt and accompaniment the first row is contrasted with)."""
        c, t_len = self.lmdm.cfg.context_frames, self.lmdm.cfg.block_frames
        n = c + self.cfg.rounds * t_len
        layout = self.model.layout
        p = next(self.model.net.parameters())
        e = self.model.dit.cfg.extra_add_channels
        rows = self.rows
        wanted = [*rows.indices, (rows.start - 1) % rows.total]
        extras = None
        if layout.channels:
            from .windows import ExtrasConfig, window_batch

            real, tokens, ext, t_f = window_batch(
                data, layout, ExtrasConfig(), self.cfg.batch, c, n - c, gen, block_frames=t_len, rows=wanted
            )
            full = real.new_zeros(real.shape[0], e, n)
            full[:, : ext.shape[1]] = ext
            full = full.to(p.device, p.dtype)
            acc = layout.offsets()["accomp"] if layout.accomp else None
            before = full[-1:, acc] if acc is not None else None
            extras = RolloutExtras(full[:-1], acc, t_f[:-1].to(p.device), before)
        else:
            real, tokens = data.batch(self.cfg.batch, n, gen, wanted)
        real, tokens = real[:-1].to(p.device, p.dtype), tokens.to(p.device, p.dtype)
        b, io, _ = real.shape
        ctx_extras = real.new_zeros(b, e, c) if extras is None else extras.window(0, c, t_len)[..., :c]
        frames = torch.cat([real.new_ones(b, 1, c), real[..., :c], ctx_extras], dim=1)
        frames = context_dropout(frames, t_len, self.cfg.p_uncond, self.cfg.p_partial, gen, rows)
        real = torch.cat([frames[:, 1 : 1 + io], real[..., c:]], dim=2)
        return _Batch(real, frames, tokens, extras)

    def _conditioning(self, batch: _Batch) -> _Conditioning:
        cross, glob = self.model.net.conditioning(
            batch.tokens, [self.model.seconds_total] * len(batch.tokens)
        )
        return _Conditioning(cross[:-1], glob[:-1], torch.roll(cross, 1, dims=0)[:-1])

    def _rollout(self, batch: _Batch, cond: _Conditioning, gen: torch.Generator) -> Tensor:
        """The generated window [context | R blocks], rolled out through a fresh stream state."""
        r, s = self.cfg.rounds, self.cfg.steps
        exits = [int(k) for k in torch.randint(1, s, (r,), generator=gen)]  # exit after k steps, 1..S-1
        gens = [torch.Generator().manual_seed(int(x)) for x in torch.randint(2**62, (r,), generator=gen)]
        state = self.lmdm.state_from_frames(batch.frames)
        kv = Conditioning(self.model.dit.cross_kv(cond.cross), cond.glob)
        blocks = rollout(self.lmdm, state, kv, exits, s, gens, batch.extras, self.rows)
        return torch.cat([batch.real[..., : self.lmdm.cfg.context_frames], blocks], dim=2)

    def _scores(self, batch: _Batch, cond: _Conditioning, fake: Tensor, gen: torch.Generator):
        """Paired re-noising: one noise level and one noise for the real and the generated window. The
        discriminator's view of the conditioning carries no gradient back into the generator."""
        c, real, rows = self.lmdm.cfg.context_frames, batch.real, self.rows
        s = rows.take(torch.sigmoid(torch.randn(rows.total, generator=gen))).to(real)
        eps = rows.take(torch.randn((rows.total, *real.shape[1:]), generator=gen)).to(real)
        y_s = (1 - s[:, None, None]) * real + s[:, None, None] * eps
        f_s = (1 - s[:, None, None]) * fake + s[:, None, None] * eps
        cross, glob = cond.cross.detach(), cond.glob.detach()
        ext = None if batch.extras is None else batch.extras.extras
        d_real = self.disc(y_s, s, cross, glob, c, ext)
        d_fake = self.disc(f_s, s, cross, glob, c, ext)
        return d_real, d_fake, y_s, s

    def _contrastive(
        self, batch: _Batch, cond: _Conditioning, y_s: Tensor, s: Tensor, d_real: Tensor
    ) -> Tensor:
        """c~: each real window under another window's prompt and accompaniment (rolled by one)."""
        ext = None if batch.extras is None else batch.extras.rolled()
        c = self.lmdm.cfg.context_frames
        d_rolled = self.disc(y_s, s, cond.rolled.detach(), cond.glob.detach(), c, ext)
        return contrastive_d_loss(d_real, d_rolled)

    def _g_loss(self, batch: _Batch, gen: torch.Generator) -> Tensor:
        cond = self._conditioning(batch)
        fake = self._rollout(batch, cond, gen)
        d_real, d_fake, _, _ = self._scores(batch, cond, fake, gen)
        return relativistic_g_loss(d_real, d_fake)

    def _d_loss(self, batch: _Batch, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            cond = self._conditioning(batch)
            fake = self._rollout(batch, cond, gen)
        d_real, d_fake, y_s, s = self._scores(batch, cond, fake, gen)
        loss_rel = relativistic_d_loss(d_real, d_fake)
        loss_con = self._contrastive(batch, cond, y_s, s, d_real)
        return loss_rel + self.lambda_c * loss_con, loss_rel, loss_con

    @torch.no_grad()
    def losses(self, data: LatentSet, seed: int) -> dict:
        """Every loss term on the batch, rollout and noise a step with this seed would use (no update)."""
        gen = self._gen(seed)
        batch = self._batch(data, gen)
        cond = self._conditioning(batch)
        fake = self._rollout(batch, cond, gen)
        d_real, d_fake, y_s, s = self._scores(batch, cond, fake, gen)
        return {
            "loss_g": self.world.mean(relativistic_g_loss(d_real, d_fake)),
            "loss_d": self.world.mean(relativistic_d_loss(d_real, d_fake)),
            "loss_contrastive": self.world.mean(self._contrastive(batch, cond, y_s, s, d_real)),
        }

    def g_step(self, data: LatentSet, seed: int | None = None) -> dict:
        gen = self._gen(seed)
        batch = self._batch(data, gen)
        for p in self.d_params:
            p.requires_grad_(False)
        loss = self.g_objective(batch, gen)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.g_params, self.cfg.grad_clip)
        self.opt_g.step()
        for p in self.d_params:
            p.requires_grad_(True)
        self.step += 1
        return {"loss_g": self.world.mean(loss)}

    def d_step(self, data: LatentSet, seed: int | None = None) -> dict:
        gen = self._gen(seed)
        batch = self._batch(data, gen)
        loss, loss_rel, loss_con = self.d_objective(batch, gen)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.d_params, self.cfg.grad_clip)
        self.opt_d.step()
        self.step += 1
        return {"loss_d": self.world.mean(loss_rel), "loss_contrastive": self.world.mean(loss_con)}
