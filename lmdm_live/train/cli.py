"""`lmdm-live train …`: data, ae, latents, stage1, arc — each resumable, each with a progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .progress import progress_bar


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="render data and train models (each stage resumes where it stopped)")
    tsub = train.add_subparsers(dest="stage", required=True)

    d = tsub.add_parser(
        "data", help="render multi-stem training music (FluidSynth), or import an audio folder"
    )
    d.add_argument("--out", type=Path, required=True, help="dataset directory (resumed when it exists)")
    d.add_argument("--hours", type=float, default=1.0, help="render until the dataset holds this much audio")
    d.add_argument("--from-folder", type=Path, help="import a folder of your own audio + captions instead")
    d.add_argument("--sample-rate", type=int, default=16000)
    d.add_argument("--hop", type=int, default=512, help="latent hop of the autoencoder the data is for")
    d.add_argument("--seconds", type=float, default=20.0, help="length of each example")
    d.add_argument("--soundfont", help="a General MIDI .sf2 (default: the system's GM soundfont)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--kind",
        choices=("styles", "solo"),
        default="styles",
        help="styles: the style cycle, mix + stems; solo: melodies on every GM lead family across its range",
    )
    d.add_argument(
        "--split", choices=("train", "valid", "test"), help="put newly rendered examples in this split"
    )
    d.add_argument(
        "--only",
        choices=("train", "valid", "test"),
        help="render only the examples a whole render puts in this split (e.g. test, for `eval model`)",
    )

    ae = tsub.add_parser("ae", help="train the Oobleck autoencoder on a dataset's mixes")
    ae.add_argument("--data", type=Path, required=True)
    ae.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed when it exists)")
    ae.add_argument("--steps", type=int, default=2000, help="train until this many steps in total")
    ae.add_argument("--batch", type=int, default=6)
    ae.add_argument("--crop", type=int, default=8192, help="samples per training crop")
    ae.add_argument("--lr", type=float, default=5e-4)
    ae.add_argument("--kl", type=float, default=1e-4, help="KL weight")
    ae.add_argument("--channels", type=int, default=32)
    ae.add_argument("--latent-dim", type=int, default=32)
    ae.add_argument("--strides", default="4,4,4,8", help="encoder strides; their product is the hop")
    ae.add_argument("--save-every", type=int, default=100)
    ae.add_argument("--seed", type=int, default=0)
    ae.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK each)")

    dec = tsub.add_parser(
        "decoder",
        help="fine-tune an LMDM file's autoencoder decoder (encoder frozen: the latents and the DiT stay valid)",
    )
    dec.add_argument("--model", type=Path, required=True, help="the LMDM checkpoint whose decoder to train")
    dec.add_argument("--data", type=Path, required=True, help="the dataset its latents came from")
    dec.add_argument(
        "--out", type=Path, required=True, help="directory for model.safetensors (resumed when it exists)"
    )
    dec.add_argument(
        "--save-as",
        type=Path,
        help="where the model with the new decoder goes (default OUT/model.safetensors)",
    )
    dec.add_argument("--steps", type=int, default=1000, help="train until this many steps in total")
    dec.add_argument("--batch", type=int, default=6)
    dec.add_argument("--crop", type=int, default=8192, help="samples per training crop")
    dec.add_argument("--lr", type=float, default=2e-4)
    dec.add_argument("--save-every", type=int, default=100)
    dec.add_argument("--seed", type=int, default=0)
    dec.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK each)")

    codec = tsub.add_parser(
        "codec",
        help="train a neural inverse of the log-mel codec: a Vocos-style vocoder, or a learned mel autoencoder",
    )
    codec.add_argument("--kind", choices=("vocoder", "ae"), default="vocoder")
    codec.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="44.1 kHz datasets from `train data` (train split)",
    )
    codec.add_argument("--out", type=Path, required=True, help="run directory (resumed when it exists)")
    codec.add_argument(
        "--minutes", type=float, default=25.0, help="train until this much training time in all"
    )
    codec.add_argument("--batch", type=int, default=8)
    codec.add_argument("--lr", type=float, default=3e-4)
    codec.add_argument("--dim", type=int, default=256, help="backbone width")
    codec.add_argument("--depth", type=int, default=8, help="ConvNeXt blocks")
    codec.add_argument("--latent-dim", type=int, default=64, help="the autoencoder's values per token")
    codec.add_argument(
        "--adv-start", type=float, default=0.3, help="share of the budget before the adversarial stage"
    )
    codec.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    codec.add_argument("--seed", type=int, default=0)

    lat = tsub.add_parser(
        "latents", help="encode a dataset with a trained autoencoder (+ text tokens, controls)"
    )
    lat.add_argument("--data", type=Path, nargs="+", required=True, help="one or more dataset folders")
    lat.add_argument(
        "--vae",
        type=Path,
        required=True,
        help="vae.safetensors from `train ae`, an LMDM file, or a codec file (lmdm_live/assets/codec.safetensors)",
    )
    lat.add_argument("--out", type=Path, required=True, help="latent set file (.safetensors)")
    lat.add_argument(
        "--keep-codec-scale",
        action="store_true",
        help="encode in the --vae codec's own token space (the codec a latent set was written with), so this "
        "set joins that one in training",
    )
    lat.add_argument("--split", default="train", help="which split(s) to encode, comma-separated")

    pr = tsub.add_parser(
        "project",
        help="narrow log-mel latent sets to their leading principal directions (and carry a model along)",
    )
    pr.add_argument("--data", type=Path, nargs="+", required=True, help="latent sets in one token space")
    pr.add_argument("--vae", type=Path, required=True, help="the codec file written beside the first set")
    pr.add_argument("--dim", type=int, default=128, help="directions kept (of 512)")
    pr.add_argument(
        "--out", type=Path, required=True, help="folder: codec.safetensors and one projected set per input"
    )
    pr.add_argument(
        "--model", type=Path, help="an LMDM on --vae's tokens to map onto them (model.safetensors)"
    )
    pr.add_argument(
        "--per-frame",
        action="store_true",
        help="one basis for every frame of a token (--dim / 4 directions each): no token-boundary grid",
    )

    from .tone import add_tone_parser

    add_tone_parser(tsub)
    s1 = tsub.add_parser("stage1", help="LMDM stage 1: block-AR training on pre-encoded latents")
    s1.add_argument(
        "--data", type=Path, nargs="+", required=True, help="latent sets (.safetensors) in one token space"
    )
    s1.add_argument("--model", default="tiny", help="preset or LMDM checkpoint to start from")
    s1.add_argument(
        "--vae",
        type=Path,
        help="the autoencoder or codec file written beside the latents (replaces the preset's)",
    )
    s1.add_argument("--mode", choices=("encdec", "causal"), default="encdec")
    s1.add_argument("--context", type=int, default=192)
    s1.add_argument("--block", type=int, default=48)
    s1.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed when it exists)")
    s1.add_argument("--steps", type=int, default=1000, help="train until this many steps in total")
    s1.add_argument("--batch", type=int, default=8)
    s1.add_argument(
        "--targets",
        type=int,
        default=1,
        help="Block-Causal: target chunks trained per window, teacher-forced in one pass (default 1)",
    )
    s1.add_argument("--lr", type=float, default=5e-5)
    s1.add_argument(
        "--decay-from",
        type=int,
        help="bring the rate down on a cosine from this step to --steps, to a tenth of --lr (default: constant)",
    )
    s1.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="steps the rate ramps up over when a run starts from a trained --model with fresh optimizer "
        "moments (default 100; 0: none)",
    )
    s1.add_argument("--save-every", type=int, default=200)
    s1.add_argument("--seed", type=int, default=0)
    s1.add_argument("--device", default="cpu")
    s1.add_argument(
        "--p-sketch", type=float, default=0.3, help="share of windows with the sketch controls on"
    )
    s1.add_argument(
        "--p-solo",
        type=float,
        default=0.0,
        help="share of windows that are the lead stem alone under its solo caption, sketched (0.8) by itself",
    )
    s1.add_argument(
        "--p-sketch-blind",
        type=float,
        help="share of sketched windows trained with no context before any target, so the model must read "
        "the sketch (with --targets > 1; default 0, or what a resumed run had)",
    )
    s1.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")

    arc = tsub.add_parser("arc", help="LMDM stage 2: ARC-Forcing post-training of a stage-1 model")
    arc.add_argument(
        "--data", type=Path, nargs="+", required=True, help="latent sets (.safetensors) in one token space"
    )
    arc.add_argument("--model", type=Path, required=True, help="stage-1 model.safetensors")
    arc.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed when it exists)")
    arc.add_argument("--steps", type=int, default=300)
    arc.add_argument("--batch", type=int, default=4)
    arc.add_argument("--rollout", type=int, default=3, help="blocks rolled out per window")
    arc.add_argument("--sampler-steps", type=int, default=4)
    arc.add_argument("--lr", type=float, default=1e-5)
    arc.add_argument("--save-every", type=int, default=50)
    arc.add_argument("--seed", type=int, default=0)
    arc.add_argument(
        "--disc-model",
        type=Path,
        default=None,
        help="the discriminator's trunk, cut at 3/4 depth (default: --model run with full attention)",
    )
    arc.add_argument("--device", default="cpu")

    keep = tsub.add_parser(
        "keep",
        help="a stage-1 run's resume point small enough to commit: float16 weights, no optimizer moments",
    )
    keep.add_argument("--run", type=Path, required=True, help="the stage-1 checkpoint directory")
    keep.add_argument("--out", type=Path, required=True, help="where to write the resume point")


def run(args) -> int:
    return {
        "data": _data,
        "ae": _ae,
        "codec": _codec,
        "decoder": _decoder,
        "latents": _latents,
        "project": _project,
        "tone": _tone,
        "stage1": _stage1,
        "arc": _arc,
        "keep": _keep,
    }[args.stage](args)


def _keep(args) -> int:
    from .keep import keep_run

    progress = keep_run(args.run, args.out)
    size = (args.out / "model.safetensors").stat().st_size / 1e6
    print(f"{args.out}: step {progress['step']}, {size:.1f} MB (resume it by copying it into a run folder)")
    return 0


def _data(args) -> int:
    from .dataset import RenderConfig, add_sketch_controls, import_folder, render_dataset

    cfg = RenderConfig(
        args.sample_rate, args.hop, args.seconds, args.seed, soundfont=args.soundfont, kind=args.kind
    )
    with progress_bar("render" if args.from_folder is None else "import") as bar:
        task = bar.add_task("", total=None, info="")

        def tick(i: int, n: int) -> None:
            bar.update(task, completed=i, total=n)

        if args.from_folder is not None:
            writer = import_folder(args.from_folder, args.out, cfg, tick)
        else:
            writer = render_dataset(args.out, args.hours, cfg, tick, args.split, args.only)
        ctl = bar.add_task("", total=None, info="sketch controls")
        add_sketch_controls(args.out, lambda i, n: bar.update(ctl, completed=i, total=n))
    print(f"{args.out}: {len(writer.examples)} examples, {writer.seconds / 3600:.2f} h")
    return 0


def _ae(args) -> int:
    from .distributed import process_group
    from .runs import saved_batch

    with process_group(args.device, saved_batch(args.out, args.batch)) as world:
        return _ae_run(args, world)


def _ae_run(args, world) -> int:
    from ..model.oobleck import OobleckConfig, OobleckVAE
    from .autoencoder import AEConfig, AETrainer, AudioClips, resume_ae

    clips = AudioClips(args.data, ("train",), lazy=world.distributed)
    held = AudioClips(args.data, ("test",), lazy=world.distributed)
    if (args.out / "progress.json").is_file():
        trainer = resume_ae(args.out, world=world)
        if world.main:
            print(f"lmdm-live: resuming {args.out} at step {trainer.step}", file=sys.stderr)
    else:
        strides = tuple(int(s) for s in args.strides.split(","))
        vae_cfg = OobleckConfig(
            in_channels=1,
            out_channels=1,
            channels=args.channels,
            c_mults=tuple(2**i for i in range(len(strides))),
            strides=strides,
            latent_dim=args.latent_dim,
        )
        if vae_cfg.hop != clips.hop:
            raise SystemExit(
                f"error: strides give hop {vae_cfg.hop}, the dataset was made for hop {clips.hop}"
            )
        torch.manual_seed(args.seed)
        trainer = AETrainer(
            OobleckVAE(vae_cfg).to(world.device),
            AEConfig(lr=args.lr, kl_weight=args.kl, batch=args.batch, seed=args.seed),
            world,
        )
    return _fit_ae(args, trainer, clips, held)


def _fit_ae(args, trainer, clips, held, also_save=None) -> int:
    """The autoencoder loop shared by `ae` and `decoder`: train, and every save_every steps evaluate on
    held-out crops and checkpoint (plus `also_save()`, e.g. the LMDM file carrying the new decoder). Under
    torchrun every rank trains on its crops of each batch; rank 0 alone evaluates and writes."""
    from .autoencoder import save_ae

    trainer.world.same_step(trainer.step)
    main = trainer.world.main
    progress_path = args.out / "progress.json"
    evals = json.loads(progress_path.read_text()).get("evals", []) if progress_path.is_file() else []
    gen_eval = torch.Generator().manual_seed(12345)
    held_batch = held.batch(8, 4 * args.crop, gen_eval) if main else None
    if not evals and main:
        evals.append({"step": trainer.step, "seconds": 0.0, **trainer.evaluate(held_batch)})
    t0 = time.time()
    with progress_bar(args.stage) as bar:
        task = bar.add_task("", total=args.steps, completed=trainer.step, info="")
        while trainer.step < args.steps:
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + trainer.step)
            audio = clips.batch(trainer.cfg.batch, args.crop, gen, trainer.rows.indices)
            out = trainer.train_step(audio, trainer.rows)
            bar.update(task, completed=trainer.step, info=f"loss {out['loss']:.3f} stft {out['stft']:.3f}")
            if main and (trainer.step % args.save_every == 0 or trainer.step == args.steps):
                ev = {"step": trainer.step, "seconds": time.time() - t0, **trainer.evaluate(held_batch)}
                evals.append(ev)
                save_ae(trainer, args.out, {"evals": evals, "sample_rate": clips.sample_rate})
                if also_save is not None:
                    also_save()
                bar.console.print(
                    f"step {trainer.step}: held-out STFT {ev['stft_distance']:.3f}, SI-SDR {ev['si_sdr_db']:.2f} dB"
                )
    return 0


def _codec(args) -> int:
    from ..model.mel import MelConfig
    from ..model.vocoder import VocoderConfig
    from .codec import AudioCrops, CodecTrainConfig, CodecTrainer, held_out, resume_codec_run

    cfg = CodecTrainConfig(
        kind=args.kind,
        minutes=args.minutes,
        batch=args.batch,
        lr=args.lr,
        adv_start=args.adv_start,
        save_every_s=args.save_every,
        seed=args.seed,
    )
    crops = AudioCrops(args.data)
    held = held_out(AudioCrops(args.data, "valid"), 8, cfg.crop_frames * MelConfig().hop)
    if (args.out / "state.json").is_file():
        trainer = resume_codec_run(args.out, cfg)
        print(
            f"resuming {args.out} at step {trainer.step} ({trainer.trained_s / 60:.1f} of {args.minutes} min)"
        )
    else:
        vcfg = VocoderConfig(
            dim=args.dim, depth=args.depth, latent_dim=args.latent_dim if args.kind == "ae" else 0
        )
        trainer = CodecTrainer(cfg, vcfg, MelConfig())
    print(
        f"{args.kind}: {sum(p.numel() for p in trainer.net.parameters()) / 1e6:.2f} M parameters, "
        f"{len(crops.files)} training files ({crops.seconds / 3600:.1f} h)",
        flush=True,
    )
    interactive = sys.stdout.isatty()
    with progress_bar(f"codec {args.kind}") as bar:
        task = bar.add_task("", total=int(cfg.minutes * 60), completed=int(trainer.trained_s), info="")

        def tick(stats: dict) -> None:
            info = f"step {stats['step']} mel {stats['mel']:.3f} peak {stats['peak']:.3f}" + (
                f" adv {stats['adv']:.3f}" if "adv" in stats else ""
            )
            bar.update(task, completed=int(stats["trained_s"]), info=info)
            if not interactive and stats["step"] % 25 == 0:
                print(f"{stats['trained_s'] / 60:6.1f} min  {info}", flush=True)

        trainer.fit(crops, held, args.out, tick)
    last = trainer.history[-1]
    print(f"{args.out}: step {trainer.step}, held-out mel L1 {last['mel']:.3f}, peak {last['peak']:.3f}")
    return 0


def _decoder(args) -> int:
    from .distributed import process_group
    from .runs import saved_batch

    with process_group(args.device, saved_batch(args.out, args.batch)) as world:
        return _decoder_run(args, world)


def _decoder_run(args, world) -> int:
    """Resuming (or re-running with the same --steps) puts the trained decoder into the current --model, so a
    DiT trained further on the same latents can pick up the decoder without training it again."""
    from safetensors.torch import load_file

    from ..model.bundle import LMDMModel
    from .autoencoder import AEConfig, AETrainer, AudioClips, resume_ae

    clips = AudioClips(args.data, ("train",), lazy=world.distributed)
    held = AudioClips(args.data, ("test",), lazy=world.distributed)
    model = LMDMModel.load(args.model)
    if model.sample_rate != clips.sample_rate or model.hop != clips.hop:
        raise SystemExit(
            f"error: {args.data} is not at the model's rate and hop ({model.sample_rate} Hz, {model.hop})"
        )
    if (args.out / "progress.json").is_file():
        saved = load_file(str(args.out / "vae.safetensors"))
        mine = model.vae.state_dict()
        if any(not torch.equal(v, saved[k]) for k, v in mine.items() if not k.startswith("decoder.")):
            raise SystemExit(f"error: {args.model}'s encoder is not the one {args.out} was trained under")
        model.vae.load_state_dict(saved, strict=True)
        trainer = resume_ae(args.out, vae=model.vae.to(world.device), world=world)
        if world.main:
            print(f"lmdm-live: resuming {args.out} at step {trainer.step}", file=sys.stderr)
    else:
        cfg = AEConfig(lr=args.lr, batch=args.batch, seed=args.seed, decoder_only=True)
        trainer = AETrainer(model.vae.to(world.device), cfg, world)
    target = args.save_as or args.out / "model.safetensors"
    if world.main:
        args.out.mkdir(parents=True, exist_ok=True)
    _fit_ae(args, trainer, clips, held, lambda: model.save(target))
    if world.main:
        model.save(target)
        print(f"{target}: {args.model} with the decoder of step {trainer.step}")
    return 0


def _latents(args) -> int:
    from .latents import encode_dataset

    splits = tuple(s.strip() for s in args.split.split(","))
    with progress_bar("encode") as bar:
        task = bar.add_task("", total=None, info="")
        vae_out = args.out.with_name(args.out.name.removesuffix(".safetensors") + ".vae.safetensors")
        ls = encode_dataset(
            args.data,
            args.vae,
            splits,
            lambda i, n: bar.update(task, completed=i, total=n),
            vae_out,
            normalise=not args.keep_codec_scale,
        )
    ls.save(args.out)
    frames = sum(x.shape[-1] for x in ls.latents)
    print(f"{args.out}: {len(ls.latents)} clips, {frames} frames; the codec to build on: {vae_out}")
    return 0


def _project(args) -> int:
    from .project import run_project

    run_project(args.data, args.vae, args.dim, args.out, args.model, per_frame=args.per_frame)
    return 0


def _tone(args) -> int:
    from .tone import run_tone_command

    return run_tone_command(args)


def _stage1(args) -> int:
    from .runs import run_stage1

    return run_stage1(args, progress_bar)


def _arc(args) -> int:
    from .runs import run_arc

    return run_arc(args, progress_bar)
