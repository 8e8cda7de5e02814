"""The stage-1 and ARC-Forcing training loops behind `lmdm-live train stage1|arc`: build or resume, step,
checkpoint every few minutes' worth of steps, print the loss curve as it goes. Under torchrun every rank
runs the loop on its share of each batch; rank 0 alone writes checkpoints and prints."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..model.bundle import LMDMModel
from ..model.checkpoint import write_json_atomic
from ..model.dit import DiTConfig
from ..model.extras import ExtrasLayout
from ..model.lmdm import LMDMConfig
from ..model.sao import SAODiT
from .autoencoder import load_vae
from .distributed import World, process_group
from .stage1 import WARMUP_STEPS, LatentSet, Stage1Config, Stage1Trainer
from .styles import STYLE_DESCRIPTIONS
from .windows import ExtrasConfig

DIT_SHAPES = {"tiny": (256, 8, 4), "small": (512, 12, 8)}  # width, depth, heads
TEXT = {"type": "minilm", "max_length": 64}


def build_model(
    shape: str,
    vae_path: str | Path,
    window: LMDMConfig,
    extras: dict | None = None,
    seed: int = 0,
) -> LMDMModel:
    """A fresh LMDM over a trained VAE or a codec file (the log-mel codec written by `train latents`): the
    DiT's io is the codec's token width, its input_add carries the extras."""
    from ..model.bundle import load_codec
    from ..model.checkpoint import load_checkpoint_config
    from ..model.codec import is_codec_file

    if shape not in DIT_SHAPES:
        raise ValueError(f"unknown DiT shape {shape!r}; known: {', '.join(DIT_SHAPES)}")
    if is_codec_file(vae_path):
        vae, mel = None, load_codec(vae_path)
        sr, z, hop = mel.sample_rate, mel.dim, mel.hop
    else:
        vae, mel = load_vae(vae_path), None
        sr = int(load_checkpoint_config(vae_path).get("sample_rate", 16000))
        z, hop = vae.cfg.latent_dim, vae.cfg.hop
    layout = ExtrasLayout.from_config(extras or {}, z)
    width, depth, heads = DIT_SHAPES[shape]
    cfg = DiTConfig(
        io_channels=z,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        cond_token_dim=384,
        global_cond_dim=384,
        input_add_dim=1 + z + layout.channels,
    )
    torch.manual_seed(seed)
    net = SAODiT(cfg, seconds_dim=cfg.global_cond_dim, seconds_min=0.0, seconds_max=256.0)
    secs = (window.context_frames + window.block_frames) * hop / sr
    # Euler: the ping-pong sampler re-noises from x0 estimates, which an undertrained model makes too smooth
    sampler = {"sampler": "euler", "steps": 8, "cfg": 3.0}
    return LMDMModel(
        net.eval(),
        window,
        None if vae is None else vae.eval().requires_grad_(False),
        sr,
        dict(TEXT),
        secs,
        shape,
        layout.to_dict(),
        sampler,
        mel,
    )


def saved_batch(out: Path, batch: int) -> int:
    """The global batch a run in `out` trains with: the saved one when it resumes (stage 1 and the
    autoencoder keep their config), else `batch`."""
    progress = out / "progress.json"
    return json.loads(progress.read_text())["config"]["batch"] if progress.is_file() else batch


def run_stage1(args, bar_factory) -> int:
    """One process, or one of torchrun's: every rank trains its share, rank 0 writes and prints."""
    with process_group(args.device, saved_batch(args.out, args.batch)) as world:
        return _run_stage1(args, bar_factory, world)


def _run_stage1(args, bar_factory, world: World) -> int:
    from ..model.bundle import load_model

    data = LatentSet.concat([LatentSet.load(d, mmap=world.distributed) for d in args.data])
    out: Path = args.out
    if (out / "progress.json").is_file():
        trainer = Stage1Trainer.resume(out, world)
        if world.main:
            print(f"lmdm-live: resuming {out} at step {trainer.step}", file=sys.stderr)
    else:
        window = LMDMConfig(mode=args.mode, context_frames=args.context, block_frames=args.block)
        if args.vae is not None:
            extras = {"tempo": True, "sketch": True, "accomp": data.drums is not None}
            model = build_model(args.model, args.vae, window, extras, args.seed)
        else:
            model = load_model(args.model, window, "cpu", torch.float32)
        extras = ExtrasConfig(p_sketch=args.p_sketch, p_solo=args.p_solo)
        trainer = Stage1Trainer(
            model.to(world.device),
            Stage1Config(batch=args.batch, lr=args.lr, seed=args.seed, targets=args.targets),
            extras=extras,
            world=world,
        )
        warmup = getattr(args, "warmup", None)
        if warmup is None:
            warmup = WARMUP_STEPS if args.vae is None and Path(args.model).is_file() else 0
        if warmup > 0:
            # a trained model under fresh moments: its first steps would move every weight by the whole
            # rate (a widened model, `train tone`, lost 9 % on its lead windows in 500 such steps)
            trainer.warm_from, trainer.warmup_steps = 0, warmup
    blind = getattr(args, "p_sketch_blind", None)
    if blind is not None:  # a recipe change may come on resume too
        trainer.cfg = replace(trainer.cfg, p_sketch_blind=blind)
    world.same_step(trainer.step)
    decay_from = getattr(args, "decay_from", None)
    if decay_from is not None:
        if not 0 <= decay_from < args.steps:
            raise SystemExit(f"error: --decay-from {decay_from} must be below --steps {args.steps}")
        trainer.decay = (decay_from, args.steps)
    if data.styles:  # what the model knows, listed in its file (`lmdm-live styles`)
        seen = set(data.styles)
        trainer.model.styles = {s: d for s, d in STYLE_DESCRIPTIONS.items() if s in seen}
    if trainer.extras.p_solo > 0 and data.lead is None:
        raise SystemExit(f"error: --p-solo needs lead-stem latents; {args.data} has none (encode it again)")
    t0 = time.time()
    with bar_factory("stage 1") as bar:
        task = bar.add_task("", total=args.steps, completed=trainer.step, info="")
        while trainer.step < args.steps:
            with torch.autocast("cuda", torch.bfloat16, enabled=bool(getattr(args, "bf16", False))):
                trainer.train_step(data)
            recent = trainer.history[-50:]
            bar.update(task, completed=trainer.step, info=f"loss {sum(recent) / len(recent):.4f}")
            if trainer.step % args.save_every == 0 or trainer.step == args.steps:
                if world.main:
                    trainer.save(out)
                bar.console.print(
                    f"step {trainer.step}: loss(50) {sum(recent) / len(recent):.4f} {time.time() - t0:.0f}s"
                )
    if world.main:
        print(
            json.dumps(
                {
                    "out": str(out),
                    "step": trainer.step,
                    "loss_last": trainer.history[-1] if trainer.history else None,
                }
            )
        )
    return 0


def run_arc(args, bar_factory) -> int:
    """One process, or one of torchrun's: every rank trains its share, rank 0 writes and prints."""
    with process_group(args.device, args.batch) as world:
        return _run_arc(args, bar_factory, world)


def _run_arc(args, bar_factory, world: World) -> int:
    from .arc import ARCConfig, ARCTrainer, Discriminator

    data = LatentSet.concat([LatentSet.load(d, mmap=world.distributed) for d in args.data])
    out: Path = args.out
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    resume = (out / "progress.json").is_file()
    model = LMDMModel.load(out / "model.safetensors" if resume else args.model)
    cfg = ARCConfig(
        rounds=args.rollout,
        steps=args.sampler_steps,
        batch=args.batch,
        lr_g=args.lr,
        lr_d=args.lr,
        seed=args.seed,
    )
    # the trunk: a bidirectional model cut at 3/4 depth (`--disc-model`), else the stage-1 model's own
    # weights run with full attention (a streaming LMDM has no bidirectional sibling to cut)
    disc_source = getattr(args, "disc_model", None) or args.model
    disc = Discriminator.from_model(model if resume else LMDMModel.load(disc_source))
    history: list[dict] = []
    if resume:
        disc.load_state_dict(load_file(str(out / "discriminator.safetensors")))
        progress = json.loads((out / "progress.json").read_text())
        history = progress["history"]
        if world.main:
            print(
                f"lmdm-live: resuming {out} at step {progress['step']} (optimizer moments restart)",
                file=sys.stderr,
            )
    trainer = ARCTrainer(model.to(world.device), disc.to(world.device), cfg, world)
    trainer.step = len(history) * 2
    world.same_step(trainer.step)
    t0 = time.time()
    with bar_factory("ARC") as bar:
        task = bar.add_task("", total=args.steps, completed=len(history), info="")
        while len(history) < args.steps:
            d = trainer.d_step(data)
            g = trainer.g_step(data)
            history.append({**d, **g})
            bar.update(
                task,
                completed=len(history),
                info=f"D {d['loss_d']:.3f} C {d['loss_contrastive']:.3f} G {g['loss_g']:.3f}",
            )
            if world.main and (len(history) % args.save_every == 0 or len(history) == args.steps):
                model.save(out / "model.safetensors")
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in disc.state_dict().items()},
                    str(out / "discriminator.safetensors"),
                )
                write_json_atomic(
                    out / "progress.json",
                    {
                        "step": len(history),
                        "history": history,
                        "config": vars(args)
                        | {"data": [str(d) for d in args.data], "model": str(args.model), "out": str(out)},
                    },
                )
                bar.console.print(f"step {len(history)}: {history[-1]} {time.time() - t0:.0f}s")
    return 0
