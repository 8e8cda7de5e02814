"""`lmdm-live eval classifier|codec|model|tempo|follow|level`: the argparse side of the evaluation (the work is in run.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..model.precision import DTYPES


def add_parser(subparsers) -> argparse.ArgumentParser:
    ev = subparsers.add_parser("eval", help="judge models: prompt and tempo adherence, drift over a stream")
    esub = ev.add_subparsers(dest="eval_command", required=True)

    c = esub.add_parser("classifier", help="train (or resume) the label classifier on held-out renders")
    c.add_argument("--data", type=Path, required=True, help="a training-data directory (index.json)")
    c.add_argument("--out", type=Path, required=True, help="classifier directory (resumed when it exists)")
    c.add_argument(
        "--test-data", type=Path, help="the directory whose test split is reported (default: --data)"
    )
    c.add_argument("--steps", type=int, default=600, help="train until this many steps in total")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--save-every", type=int, default=100)
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    c.add_argument(
        "--codec",
        type=Path,
        help="an LMDM file: also train on the renders through its autoencoder, and report the test split "
        "through it (the ceiling a generator on that codec can reach)",
    )
    c.set_defaults(eval_run=cmd_classifier)

    k = esub.add_parser(
        "codec",
        help="what a codec keeps of the test split's pitch, brightness and tempo, and of known melodies",
    )
    k.add_argument(
        "--model",
        type=Path,
        required=True,
        help="a codec file (`train codec`, the shipped one) or an LMDM file",
    )
    k.add_argument("--data", type=Path, required=True, help="a training-data directory (with stems)")
    k.add_argument("--split", default="test")
    k.add_argument("--max-examples", type=int, default=None)
    k.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    k.add_argument("--no-melody", action="store_true", help="skip the melody check (GM leads from MIDI)")
    k.add_argument("--no-speed", action="store_true", help="skip timing the streaming decoder")
    k.set_defaults(eval_run=cmd_codec)

    for name, what, run in (
        ("tempo", "tempo channels", cmd_tempo),
        ("sketch", "sketch channels (on lead-stem windows, as a hum is trained)", cmd_sketch),
    ):
        t = esub.add_parser(
            name, help=f"how much a model reads its {what}: its stage-1 loss with true and with lying ones"
        )
        t.add_argument("--model", type=Path, required=True, help="an LMDM file")
        t.add_argument(
            "--data", type=Path, required=True, help="a latent set with frame controls (`train latents`)"
        )
        t.add_argument("--windows", type=int, default=16, help="windows drawn from the set (one batch)")
        t.add_argument("--seeds", type=int, default=4, help="noise draws per variant, the same for each")
        t.add_argument("--targets", type=int, default=8, help="target blocks per window")
        t.add_argument("--seed", type=int, default=123)
        t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
        t.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
        t.set_defaults(eval_run=run)

    f = esub.add_parser(
        "follow",
        help="whether the music goes at the bpm asked for, per tempo-guidance weight (no classifier, no data)",
    )
    f.add_argument("--model", required=True, help="an LMDM file or a preset")
    f.add_argument("--bpm", type=float, nargs="+", default=[90.0, 120.0, 140.0], help="tempi asked for")
    f.add_argument(
        "--tempo-guidance", type=float, nargs="+", default=[0.0, 5.0, 10.0, 20.0], help="weights compared"
    )
    f.add_argument("--prompts", type=int, default=None, help="use the first N of the built-in prompts")
    f.add_argument("--seconds", type=float, default=16.0, help="each stream (the first 2 s are left out)")
    f.add_argument("--steps", type=int, default=None, help="default: the model's own")
    f.add_argument("--cfg", type=float, default=None, help="default: the model's own")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--dtype", choices=DTYPES, default="auto", help="the DiT's (as played)")
    f.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    f.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    f.set_defaults(eval_run=cmd_follow)

    lv = esub.add_parser(
        "level", help="the model's loudness against its test renders, and the gain that matches them"
    )
    lv.add_argument("--model", required=True, help="an LMDM file")
    lv.add_argument("--data", type=Path, required=True, help="training-data directory (its test split)")
    lv.add_argument("--prompts", type=int, default=8, help="test prompts played (style-spread)")
    lv.add_argument("--seconds", type=float, default=12.0, help="each stream (the first 2 s are left out)")
    lv.add_argument("--steps", type=int, default=None, help="default: the model's own")
    lv.add_argument("--cfg", type=float, default=None, help="default: the model's own")
    lv.add_argument("--tempo-guidance", type=float, default=None, help="default: the model's own")
    lv.add_argument("--dtype", choices=DTYPES, default="auto", help="the DiT's (as played)")
    lv.add_argument(
        "--write", type=Path, default=None, help="write the model with its level set to this file"
    )
    lv.set_defaults(eval_run=cmd_level)

    m = esub.add_parser("model", help="generate long streams and score them window by window")
    m.add_argument("--model", required=True, help="LMDM checkpoint PATH or preset (tiny | small | ...)")
    m.add_argument("--classifier", type=Path, required=True, help="directory from `eval classifier`")
    m.add_argument("--data", type=Path, required=True, help="training-data directory (its test split)")
    m.add_argument("--out", type=Path, required=True, help="where metrics.json and metrics.png go")
    m.add_argument("--seconds", type=float, default=120.0, help="length of each generated stream")
    m.add_argument("--window", type=float, default=10.0, help="scoring window in seconds")
    m.add_argument("--prompts", type=Path, default=None, help='JSON list of {"prompt", "labels", "bpm"}')
    m.add_argument("--max-prompts", type=int, default=None)
    m.add_argument("--transitions", type=int, default=4, help="prompt switches to time (0: none)")
    m.add_argument("--transition-seconds", type=float, default=40.0, help="length of each switch stream")
    m.add_argument("--compare", default=None, help="a second model, drawn as a second curve")
    m.add_argument("--label", default=None, help="name of --model in the plot and table")
    m.add_argument("--compare-label", default=None, help="name of --compare in the plot and table")
    m.add_argument("--steps", type=int, default=None, help="default: the model's own")
    m.add_argument("--cfg", type=float, default=None, help="default: the model's own")
    m.add_argument(
        "--tempo-guidance",
        type=float,
        default=None,
        help="guidance on the tempo channels; default: the model's own",
    )
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", choices=DTYPES, default="float32", help="the DiT's (as played)")
    m.add_argument("--t5", help="local t5-base directory, for models conditioned on T5")
    m.add_argument(
        "--eject-frames", type=int, default=None, help="context dropped at a switch (default: C - T)"
    )
    m.add_argument(
        "--transition-cfgpp",
        default="default",
        help="CFG++ lambda through a switch, 'off' for plain CFG (default: the stream's)",
    )
    m.set_defaults(eval_run=cmd_model)
    return ev


def run(args) -> int:
    return args.eval_run(args)


def _progress(stderr: bool = False):
    """A progress bar; on stderr where stdout carries the command's JSON."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True) if stderr else None,
        transient=False,
    )


def cmd_classifier(args) -> int:
    import torch

    from .classifier import ClassifierConfig, ClassifierTrainer, MelBank, test_report
    from .data import CodecRoundTrip

    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.out / "progress.json").is_file():
        trainer = ClassifierTrainer.resume(args.out)
        print(f"lmdm-live: resuming {args.out} at step {trainer.step}", file=sys.stderr)
    else:
        trainer = ClassifierTrainer(ClassifierConfig(batch=args.batch, seed=args.seed))
    if args.codec is not None:
        trainer.codec = str(args.codec)
    codec = CodecRoundTrip(trainer.codec) if trainer.codec else None
    if trainer.step < args.steps:
        # never the generator's "train" split
        bank = MelBank.from_dataset(args.data, "valid", trainer.cfg, codec=codec)
        with _progress() as bar:
            task = bar.add_task("classifier", total=args.steps, completed=trainer.step)
            while trainer.step < args.steps:
                loss = trainer.train_step(bank)
                bar.update(task, completed=trainer.step, description=f"classifier loss {loss:.3f}")
                if trainer.step % args.save_every == 0 or trainer.step == args.steps:
                    trainer.save(args.out)
    if not (args.out / "progress.json").is_file():
        trainer.save(args.out)
    test = args.test_data or args.data
    reports = {"renders": test_report(trainer.classifier(), test)}
    report = {**reports["renders"], "codec": trainer.codec, "test_data": str(test)}
    if codec is not None:
        reports["through the codec"] = report["through_codec"] = test_report(
            trainer.classifier(), test, codec=codec
        )
    (args.out / "test_report.json").write_text(json.dumps(report, indent=1) + "\n")
    for what, rep in reports.items():
        print(f"test split ({test}), {what}, step {trainer.step}:")
        for window, r in rep.items():
            acc = "  ".join(f"{h} {v:.3f}" for h, v in r["accuracy"].items())
            f1 = "-" if r["families_f1"] is None else f"{r['families_f1']:.3f}"
            print(
                f"  {window:>4} windows ({r['windows']}): {acc}  families F1 {f1}  adherence {r['adherence']:.3f}"
            )
    return 0


def cmd_codec(args) -> int:
    from .codec import codec_report

    report = codec_report(
        args.model,
        args.data,
        args.split,
        args.max_examples,
        melody=not args.no_melody,
        speed=not args.no_speed,
    )
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


def cmd_tempo(args) -> int:
    from .tempo_use import TempoUseConfig, tempo_use

    return _channel_use(args, tempo_use, TempoUseConfig)


def cmd_sketch(args) -> int:
    from .sketch_use import SketchUseConfig, sketch_use

    return _channel_use(args, sketch_use, SketchUseConfig)


def _channel_use(args, measure, config) -> int:
    """`eval tempo` / `eval sketch`: the loss table, and the report as JSON where asked."""
    import torch

    from ..model.bundle import LMDMModel
    from ..train.latent_set import LatentSet

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config(windows=args.windows, seeds=args.seeds, targets=args.targets, seed=args.seed)
    report = measure(LMDMModel.load(args.model), LatentSet.load(args.data), cfg)
    for label in ("with context", "no context"):
        losses = "  ".join(f"{k} {v:.4f}" for k, v in report[label].items())
        print(f"{label:>12}: {losses}  (lying channels cost {100 * report['cost'][label]:+.2f} %)")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def cmd_follow(args) -> int:
    import torch

    from ..model.bundle import load_model
    from ..model.precision import resolve_dtype
    from ..model.samplers import SamplerSettings
    from .follow import PROMPTS, FollowConfig, follow

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.prompts is not None and not 1 <= args.prompts <= len(PROMPTS):
        raise ValueError(f"--prompts must be in 1..{len(PROMPTS)}, got {args.prompts}")
    cfg = FollowConfig(
        bpms=tuple(args.bpm),
        weights=tuple(args.tempo_guidance),
        prompts=PROMPTS[: args.prompts or len(PROMPTS)],
        seconds=args.seconds,
        steps=args.steps,
        cfg=args.cfg,
        seed=args.seed,
    )
    for w in cfg.weights:  # a bad weight fails here, before the model loads
        SamplerSettings(tempo_guidance=w)
    model = load_model(args.model, None, "cpu", resolve_dtype(args.dtype, "cpu"))
    if not model.layout.tempo:
        raise ValueError(f"{args.model} has no tempo channels: there is no bpm for it to follow")
    with _progress() as bar:
        task = bar.add_task("streams", total=len(cfg.weights) * len(cfg.bpms) * len(cfg.prompts))
        report = follow(model, model.text_encoder(None), cfg, lambda n: bar.advance(task, n))
    report["model"], report["dtype"] = str(args.model), args.dtype
    print("tempo_guidance  error (median)  within 5 %  octave-folded error  within 5 %  peak")
    for w, s in report["summary"].items():
        print(
            f"{w:>14}  {100 * s['error_median']:>13.1f}%  {100 * s['within']:>9.0f}%"
            f"  {100 * s['octave_error_median']:>18.1f}%  {100 * s['octave_within']:>9.0f}%  {s['peak_median']:.2f}"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def cmd_level(args) -> int:
    from ..model.bundle import LMDMModel, load_model
    from ..model.precision import resolve_dtype
    from .level import LevelConfig, calibrate

    if args.write is not None and not args.write.parent.is_dir():
        raise ValueError(f"--write: folder {args.write.parent} does not exist")
    cfg = LevelConfig(
        prompts=args.prompts,
        seconds=args.seconds,
        steps=args.steps,
        cfg=args.cfg,
        tempo_guidance=args.tempo_guidance,
    )
    model = load_model(args.model, None, "cpu", resolve_dtype(args.dtype, "cpu"))
    with _progress(stderr=True) as bar:
        task = bar.add_task("streams", total=cfg.prompts)
        report = calibrate(model, model.text_encoder(None), args.data, cfg, lambda n: bar.advance(task, n))
    report["model"], report["dtype"], report["level_before"] = str(args.model), args.dtype, model.level
    if args.write is not None:
        full = LMDMModel.load(args.model)  # float32 weights, as the file holds them
        full.level = report["level"]
        full.save(args.write)
        report["written"] = str(args.write)
    print(json.dumps({k: v for k, v in report.items() if k != "streams"}))
    return 0


def cmd_model(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .run import EvalConfig, evaluate

    cfg = EvalConfig(
        seconds=args.seconds,
        window=args.window,
        steps=args.steps,
        cfg=args.cfg,
        tempo_guidance=args.tempo_guidance,
        seed=args.seed,
        max_prompts=args.max_prompts,
        transitions=args.transitions,
        transition_seconds=args.transition_seconds,
        eject_frames=args.eject_frames,
        transition_cfg_pp=args.transition_cfgpp
        if args.transition_cfgpp in ("default", "off")
        else float(args.transition_cfgpp),
    )
    with _progress() as bar:

        def progress(name):
            def start(total):
                task = bar.add_task(f"{name}: generating", total=total)
                return lambda n: bar.advance(task, n)

            return start

        metrics = evaluate(
            args.model,
            args.classifier,
            args.data,
            args.out,
            cfg,
            prompts_file=args.prompts,
            compare=args.compare,
            label=args.label,
            compare_label=args.compare_label,
            device=args.device,
            t5=args.t5,
            progress=progress,
            dtype=args.dtype,
        )

    def f(x, fmt=".3f"):
        return "-" if x is None else format(x, fmt)

    real = metrics["real"]
    table = Table(title=f"{metrics['prompts']} prompts x {args.seconds:g} s, {args.window:g} s windows")
    for col in ("model", "adherence first -> last", "style/tempo/mode/lead", "FD first -> last"):
        table.add_column(col)
    table.add_column("tempo err median (mean; octave-folded mean)")
    table.add_column("switch blocks")
    table.add_column("seam flux ratio (real music: ~1)")
    for m in metrics["models"]:
        s = m["summary"]
        table.add_row(
            m["label"],
            f"{f(s['adherence'])}: {f(s['adherence_first'])} -> {f(s['adherence_last'])}",
            "/".join(f(s["heads"][h], ".2f") for h in ("style", "tempo_bucket", "mode", "lead")),
            f"{f(s['fd'], '.1f')}: {f(s['fd_first'], '.1f')} -> {f(s['fd_last'], '.1f')}",
            f"{f(s.get('tempo_error_median'))} ({f(s['tempo_error'])}; {f(s['tempo_error_octave'])})",
            f"{f(s['transition_blocks'], '.1f')} ({s['transitions_timed']} timed; an instant splice of "
            f"real renders: {f(s.get('transition_splice_blocks'), '.1f')}); window ahead: "
            f"{f(s.get('transition_blocks_ahead'), '.1f')} (instant: {f(s.get('transition_splice_blocks_ahead'), '.1f')})",
            f"{f(s.get('seam_flux_ratio'), '.2f')} (real: {f(s.get('seam_flux_ratio_real'), '.2f')})",
        )
    table.add_row(
        "real test music",
        f(real["adherence"]),
        "",
        f"{f(real['fd_floor'], '.1f')} (half vs half)",
        "",
        "",
        "",
    )
    Console().print(table)
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'metrics.png'}")
    return 0
