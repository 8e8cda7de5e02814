"""LMDM stage 1: fit the block-AR objective on pre-encoded latents, the way the streams are generated.

Each example is a window of C context + T target frames. The context enters through `to_input_add_embed`
(with context dropout: the whole context, or its first k blocks, zeroed and masked out, so the model learns
to start from nothing and to continue after `drop_context`); the target is noised on the rectified-flow
path and the model predicts the velocity under its mode's attention mask (`LMDM.window_velocity`; the KV caches
reproduce it up to the first slide of a Block-Causal window, ARC-Forcing trains what they carry past it). Text conditioning is dropped for CFG by zeroing the cross-attention tokens, the
same null the samplers use.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.bundle import LMDMModel
from ..model.checkpoint import load_optimizer, save_optimizer, write_json_atomic
from ..model.lmdm import LMDM, Conditioning, LMDMConfig
from .distributed import Rows, World, data_parallel, global_sum
from .latent_set import LatentSet
from .windows import ExtrasConfig, window_batch

WARMUP_STEPS = 100  # the learning rate's ramp after the optimizer's moments restart
DECAY_FLOOR = 0.1  # the share of the rate left at the end of a cosine decay


@dataclass(frozen=True)
class Stage1Config:
    batch: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.0
    p_uncond: float = 0.2  # whole context dropped
    p_partial: float = 0.3  # first k blocks of the context dropped, k ~ U{1..C/T}
    cfg_dropout: float = 0.1  # text dropped (zero cross-attention tokens)
    timesteps: str = "logit_normal"  # or "uniform"
    grad_clip: float = 1.0
    seed: int = 0
    targets: int = 1  # Block-Causal: target chunks per window, all trained in one teacher-forced pass
    # K-target windows with the sketch on: the share trained with nothing before any target, so the sketch
    # and the caption are all there is to go on (with the context there the next frames follow from it, and
    # a model trained only so learns to ignore the sketch: docs/training.md)
    p_sketch_blind: float = 0.0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.lr <= 0:
            raise ValueError("batch must be >= 1 and lr > 0")
        if self.p_sketch_blind and self.targets < 2:
            raise ValueError("p_sketch_blind is for K-target windows (targets >= 2)")
        for name in ("p_uncond", "p_partial", "cfg_dropout", "p_sketch_blind"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1")
        if self.targets < 1:
            raise ValueError(f"targets must be >= 1, got {self.targets}")
        if self.timesteps not in ("logit_normal", "uniform"):
            raise ValueError(f"timesteps must be 'logit_normal' or 'uniform', got {self.timesteps!r}")


def context_dropout(
    frames: Tensor,
    block: int,
    p_uncond: float,
    p_partial: float,
    gen: torch.Generator,
    rows: Rows | None = None,
) -> Tensor:
    """Zero (and mask out) the whole context or its first k blocks, per example. `frames` are `rows` of the
    batch; the draws are made for all of it."""
    _, _, c = frames.shape
    b = frames.shape[0] if rows is None else rows.total
    keep = torch.ones(b, c)
    u = torch.rand(b, generator=gen)
    blocks = c // block
    k = torch.randint(1, max(blocks, 1) + 1, (b,), generator=gen)
    for i in range(b):
        if u[i] < p_uncond:
            keep[i] = 0
        elif u[i] < p_uncond + p_partial:
            keep[i, : int(k[i]) * block] = 0
    keep = keep if rows is None else rows.take(keep)
    return frames * keep[:, None, :].to(frames)


def sample_t(n: int, kind: str, gen: torch.Generator) -> Tensor:
    if kind == "uniform":
        return torch.rand(n, generator=gen)
    return torch.sigmoid(torch.randn(n, generator=gen))


def stage1_loss(
    model: LMDMModel,
    lmdm: LMDM,
    latents: Tensor,
    tokens: Tensor,
    cfg: Stage1Config,
    gen: torch.Generator,
    extras: Tensor | None = None,
    rows: Rows | None = None,
) -> Tensor:
    """MSE between predicted and true velocity on the target block of each window.

    `extras` (B, E_layout, C+T) are the window's named extra channels; the DiT's remaining ones stay 0.
    The windows are `rows` of the batch (all of it by default): noise, timesteps and dropout are drawn for
    the whole batch and these rows' taken, so a process computes its rows as a single process would."""
    c, t_len = lmdm.cfg.context_frames, lmdm.cfg.block_frames
    p = next(model.net.parameters())
    latents = latents.to(p.device, p.dtype)
    b, io, _ = latents.shape
    rows = rows or Rows.all(b)
    ctx, x0 = latents[..., :c], latents[..., c : c + t_len]
    e = model.dit.cfg.extra_add_channels
    full = latents.new_zeros(b, e, c + t_len)
    if extras is not None:
        full[:, : extras.shape[1]] = extras.to(full)
    frames = torch.cat([latents.new_ones(b, 1, c), ctx, full[..., :c]], dim=1)
    frames = context_dropout(frames, t_len, cfg.p_uncond, cfg.p_partial, gen, rows)
    t = rows.take(sample_t(rows.total, cfg.timesteps, gen)).to(p.device, p.dtype)
    eps = rows.take(torch.randn((rows.total, *x0.shape[1:]), generator=gen)).to(p.device, p.dtype)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    drop = rows.take(torch.rand(rows.total, generator=gen) < cfg.cfg_dropout).to(p.device)
    tokens = tokens.to(p.device, p.dtype)
    seconds = [model.seconds_total] * b
    cross, glob = model.net.conditioning(tokens, seconds)
    cross = torch.where(drop[:, None, None], torch.zeros_like(cross), cross)
    cond = Conditioning(model.dit.cross_kv(cross), glob)
    v = lmdm.window_velocity(
        frames, x_t, t, cond, target_extras=full[..., c:] if extras is not None else None
    )
    return F.mse_loss(v.float(), (eps - x0).float())


def chunk_dropout(
    frames: Tensor,
    block: int,
    window: int,
    p_uncond: float,
    p_partial: float,
    gen: torch.Generator,
    rows: Rows | None = None,
) -> Tensor:
    """`context_dropout` for a K-target window (B, ch, C+(K-1)T): the first j chunks zeroed and masked out,
    j >= w (some target then starts from nothing, the ones after it from a short context) or j < w."""
    _, _, n = frames.shape
    b = frames.shape[0] if rows is None else rows.total
    chunks = n // block
    keep = torch.ones(b, n)
    u = torch.rand(b, generator=gen)
    none = torch.randint(window, max(chunks, window) + 1, (b,), generator=gen)
    part = torch.randint(1, window, (b,), generator=gen)
    for i in range(b):
        if u[i] < p_uncond:
            keep[i, : int(none[i]) * block] = 0
        elif u[i] < p_uncond + p_partial:
            keep[i, : int(part[i]) * block] = 0
    keep = keep if rows is None else rows.take(keep)
    return frames * keep[:, None, :].to(frames)


def chunks_loss(
    model: LMDMModel,
    lmdm: LMDM,
    latents: Tensor,
    tokens: Tensor,
    cfg: Stage1Config,
    gen: torch.Generator,
    extras: Tensor | None = None,
    rows: Rows | None = None,
) -> Tensor:
    """Velocity MSE over K target chunks per window (B, io, C+KT), teacher-forced in one pass
    (`LMDM.chunks_velocity`): each target continues the clean chunks before it, as a stream would.

    `extras` (B, E, C+KT) come with any accompaniment fully visible. An accompanied row draws t_f from
    [-T, T] as a jam streams: with t_f >= 0 every target sees its own first t_f frames of it; with t_f < 0
    only the last target is trained, its context's accompaniment hidden from t_f before its start.

    The windows are `rows` of the batch, as in `stage1_loss`; the weighted mean is over the whole batch."""
    c, t_len = lmdm.cfg.context_frames, lmdm.cfg.block_frames
    p = next(model.net.parameters())
    latents = latents.to(p.device, p.dtype)
    b, io, length = latents.shape
    rows = rows or Rows.all(b)
    k = (length - c) // t_len
    n = c + (k - 1) * t_len
    full = latents.new_zeros(b, model.dit.cfg.extra_add_channels, length)
    if extras is not None:
        full[:, : extras.shape[1]] = extras.to(full)
    weights = torch.ones(b, k, device=p.device)
    target_extras = full[..., c:].clone()  # the clean chunks keep what the targets may not see yet
    acc = model.layout.offsets()["accomp"] if model.layout.accomp else None
    if acc is not None and extras is not None:
        t_f = rows.take(torch.randint(-t_len, t_len + 1, (rows.total,), generator=gen))
        own = torch.arange(t_len)
        for i in torch.nonzero(full[:, acc.start].amax(-1) > 0).flatten().tolist():
            if t_f[i] >= 0:
                target_extras[i, acc] *= (own < t_f[i]).repeat(k).to(full)
            else:
                weights[i, :-1] = 0
                full[i, acc, n + int(t_f[i]) :] = 0
                target_extras[i, acc] = 0
    frames = torch.cat([latents.new_ones(b, 1, n), latents[..., :n], full[..., :n]], dim=1)
    frames = chunk_dropout(frames, t_len, lmdm.cfg.window_chunks, cfg.p_uncond, cfg.p_partial, gen, rows)
    if cfg.p_sketch_blind > 0 and model.layout.sketch and extras is not None:
        blind = rows.take(torch.rand(rows.total, generator=gen) < cfg.p_sketch_blind).to(p.device)
        sketched = target_extras[:, model.layout.offsets()["sketch"].start].amax(-1) > 0
        frames = frames * ~(blind & sketched)[:, None, None]
    t = rows.take(sample_t(rows.total * k, cfg.timesteps, gen).view(rows.total, k)).to(p.device, p.dtype)
    x0 = latents[..., c:]
    eps = rows.take(torch.randn((rows.total, *x0.shape[1:]), generator=gen)).to(p.device, p.dtype)
    level = t.repeat_interleave(t_len, dim=1)[:, None, :]
    x_t = (1 - level) * x0 + level * eps
    drop = rows.take(torch.rand(rows.total, generator=gen) < cfg.cfg_dropout).to(p.device)
    cross, glob = model.net.conditioning(tokens.to(p.device, p.dtype), [model.seconds_total] * b)
    cross = torch.where(drop[:, None, None], torch.zeros_like(cross), cross)
    cond = Conditioning(model.dit.cross_kv(cross), glob)
    v = lmdm.chunks_velocity(frames, x_t, t, cond, target_extras if extras is not None else None)
    err = (v.float() - (eps - x0).float()).pow(2).mean(1).unflatten(-1, (k, t_len)).mean(-1)
    # the weights differ by row: the mean is the whole batch's weighted sum over its total weight
    return global_sum((err * weights).sum()) / global_sum(weights.sum())


class Stage1Trainer:
    """AdamW over the DiT (and seconds conditioner); deterministic per step, resumable from a directory.

    With a `world` of several processes (under torchrun) each computes its rows of the global batch and
    DistributedDataParallel averages the gradients; the model must already be on the world's device."""

    def __init__(
        self,
        model: LMDMModel,
        cfg: Stage1Config,
        window: LMDMConfig | None = None,
        extras: ExtrasConfig | None = None,
        world: World | None = None,
    ) -> None:
        self.model, self.cfg = model, cfg
        self.extras = extras or ExtrasConfig()
        self.world = world or World()
        self.rows = self.world.rows(cfg.batch)
        if window is not None:
            model.lmdm = window
        self.lmdm = LMDM(model.dit, model.lmdm)
        if cfg.targets > 1 and model.lmdm.mode != "causal":
            raise ValueError("several target chunks per window need the Block-Causal mode")
        self.params = [p for p in model.net.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        model.net.train()
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.warm_from: int | None = None  # the step the optimizer's moments restarted at, if they did
        self.warmup_steps = WARMUP_STEPS
        self.decay: tuple[int, int] | None = None  # (first, last) step of the cosine decay, set per run
        self.objective = data_parallel(model.net, self._loss, self.world)
        self.step = 0
        self.history: list[float] = []

    def _loss(
        self, latents: Tensor, tokens: Tensor, extras: Tensor | None, gen: torch.Generator, rows: Rows
    ) -> Tensor:
        loss_fn = chunks_loss if self.cfg.targets > 1 else stage1_loss
        return loss_fn(self.model, self.lmdm, latents, tokens, self.cfg, gen, extras, rows)

    def lr_now(self) -> float:
        """The configured rate, ramped up linearly over `warmup_steps` after the optimizer's moments restarted
        (Adam's first bias-corrected steps move every weight by about the whole rate), and brought down on a
        cosine to DECAY_FLOOR of itself over `decay` when a run asks for it (a constant rate leaves the loss
        at the level its gradient noise allows)."""
        rate = self.cfg.lr
        if self.warm_from is not None:
            rate *= min(1.0, (self.step - self.warm_from + 1) / self.warmup_steps)
        if self.decay is not None:
            first, last = self.decay
            done = min(max((self.step - first) / max(last - first, 1), 0.0), 1.0)
            rate *= DECAY_FLOOR + (1.0 - DECAY_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * done))
        return rate

    def train_step(self, data: LatentSet) -> float:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        c, t = self.lmdm.cfg.context_frames, self.lmdm.cfg.block_frames
        k = self.cfg.targets
        layout = self.model.layout
        extras = None
        if layout.channels:
            drawn = window_batch(
                data,
                layout,
                self.extras,
                self.cfg.batch,
                c,
                k * t,
                gen,
                block_frames=k * t if k > 1 else None,
                rows=self.rows.indices,
            )
            latents, tokens, extras = drawn[:3]
        else:
            latents, tokens = data.batch(self.cfg.batch, c + k * t, gen, self.rows.indices)
        loss = self.objective(latents, tokens, extras, gen, self.rows)
        value = self.world.mean(loss)  # every process sees the whole batch's loss and stops alike
        if not math.isfinite(value):
            raise FloatingPointError(f"step {self.step}: loss is {value}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        if self.warm_from is not None or self.decay is not None:  # else the rate it was built with
            for group in self.opt.param_groups:
                group["lr"] = self.lr_now()
        self.opt.step()
        self.step += 1
        self.history.append(value)
        return value

    # --- checkpoints: model (LMDM safetensors), optimizer (safetensors), progress (JSON) ---------------------

    def save(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / "model.safetensors")
        meta = save_optimizer(self.opt, out / "optimizer.safetensors")
        progress = {
            "step": self.step,
            "history": self.history,
            "config": asdict(self.cfg),
            "extras": asdict(self.extras),
            "window": asdict(self.model.lmdm),
            "optimizer": meta,
        }
        if self.warm_from is not None:  # a run stopped inside its warm-up resumes inside it
            progress["warm_up"] = [self.warm_from, self.warmup_steps]
        write_json_atomic(out / "progress.json", progress)

    @classmethod
    def resume(cls, out: str | Path, world: World | None = None) -> Stage1Trainer:
        """The trainer saved in `out`, on the world's device (its optimizer state too), on any number of
        processes: the saved batch is the global one and the step's RNG does not depend on the world."""
        out = Path(out)
        world = world or World()
        progress = json.loads((out / "progress.json").read_text())
        model = LMDMModel.load(out / "model.safetensors", lmdm=LMDMConfig(**progress["window"]))
        model.to(world.device)
        extras = progress.get("extras", {})
        extras["median_kernels"] = tuple(extras.get("median_kernels", ExtrasConfig.median_kernels))
        cfg = Stage1Config(**progress["config"])
        trainer = cls(model, cfg, extras=ExtrasConfig(**extras), world=world)
        trainer.step, trainer.history = progress["step"], list(progress["history"])
        if "optimizer" in progress and (out / "optimizer.safetensors").is_file():
            load_optimizer(trainer.opt, out / "optimizer.safetensors", progress["optimizer"])
            if "warm_up" in progress:
                trainer.warm_from, trainer.warmup_steps = progress["warm_up"]
        else:  # a kept resume point (train/keep.py): fresh moments would make the first steps lr-sized
            trainer.warm_from = trainer.step
        return trainer
