"""`lmdm-live`: the command line. Each subcommand is a thin layer over the library; errors are one line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("out/lmdm-live.wav")


def _prompt_arg(text: str) -> tuple[str, float]:
    """'deep techno' or 'deep techno:0.5' (the weight after the last colon, when it is a number)."""
    head, sep, tail = text.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def _change_arg(text: str) -> tuple[int, str]:
    block, sep, prompt = text.partition("=")
    if not sep or not block.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected BLOCK=PROMPT (e.g. 8=ambient pads), got {text!r}")
    return int(block), prompt


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="tiny", help="tiny | small | saos-random | PATH to an LMDM .safetensors"
    )
    p.add_argument("--mode", choices=("encdec", "causal", "bidirectional"), help="override the model's mode")
    p.add_argument("--context", type=int, help="context frames C (override)")
    p.add_argument("--block", type=int, help="block frames T (override)")
    p.add_argument("--t5", help="local t5-base directory, for models conditioned on T5")
    p.add_argument("--device", default="cpu")


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--sampler", choices=("pingpong", "euler"), default="pingpong")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--cfg-pp", type=float, default=None, help="CFG++ lambda (replaces --cfg)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lmdm-live", description="A live music diffusion model you can play.")
    sub = ap.add_subparsers(dest="command")

    play = sub.add_parser("play", help="start the instrument (default)")
    _add_model_args(play)
    play.add_argument("--prompt", action="append", type=_prompt_arg, help="TEXT[:WEIGHT], repeatable")
    play.add_argument("--seconds", type=float, default=10.0)
    play.add_argument("--out", type=Path, default=DEFAULT_OUT)
    play.add_argument("--seed", type=int, default=0)

    render = sub.add_parser("render", help="render a stream offline to a WAV file (same LMDMStream as live)")
    _add_model_args(render)
    _add_sampler_args(render)
    render.add_argument("--prompt", action="append", type=_prompt_arg, help="TEXT[:WEIGHT], repeatable")
    render.add_argument(
        "--change",
        action="append",
        type=_change_arg,
        default=[],
        help="BLOCK=PROMPT: switch prompt at that block index, repeatable",
    )
    render.add_argument("--seconds", type=float, default=10.0)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--out", type=Path, required=True)

    bench = sub.add_parser("bench", help="measure the cost of a block in each mode")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--model", default="tiny", help="tiny | small | saos-random | PATH")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    bench.add_argument("--context", type=int, default=192)
    bench.add_argument("--block", type=int, default=48)
    bench.add_argument("--steps", type=int, default=8)
    bench.add_argument("--cfg", type=float, default=1.0)
    bench.add_argument("--blocks", type=int, default=10, help="timed blocks per mode (median reported)")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    bench.add_argument("--no-decode", action="store_true", help="skip timing the streaming decoder")
    bench.add_argument("--out", type=Path, help="also write the JSON here")

    convert = sub.add_parser("convert", help="convert checkpoints into the lmdm_live format")
    csub = convert.add_subparsers(dest="source", required=True)
    sao = csub.add_parser("sao", help="Stable Audio Open Small -> LMDM checkpoint")
    sao.add_argument("--ckpt", "--checkpoint", dest="ckpt", required=True, help=".safetensors or .ckpt")
    sao.add_argument("--config", required=True, help="model_config.json")
    sao.add_argument("--out", required=True, help="output .safetensors")
    sao.add_argument("--input-add-dim", type=int, default=None, help="default 1 + io_channels (65)")
    sao.add_argument("--no-vae", action="store_true", help="leave the autoencoder out")
    return ap


# --- commands -------------------------------------------------------------------------------------------


def _load(args):
    import torch

    from .bench import load_model
    from .model.bundle import PRESETS
    from .model.checkpoint import load_checkpoint_config
    from .model.lmdm import LMDMConfig

    if args.model in PRESETS:
        base = LMDMConfig()
    else:  # the saved window, then the overrides
        path = Path(args.model)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path} (presets: {', '.join(PRESETS)})")
        base = LMDMConfig(**load_checkpoint_config(path).get("lmdm", {}))
    window = LMDMConfig(
        mode=args.mode or base.mode,
        context_frames=args.context or base.context_frames,
        block_frames=args.block or base.block_frames,
    )
    return load_model(args.model, window, args.device, torch.float32)


def _render(args, prompts, changes, sampler) -> dict:
    import numpy as np
    import soundfile as sf

    from .stream import LMDMStream, StreamParams

    t0 = time.perf_counter()
    model = _load(args)
    text = model.text_encoder(getattr(args, "t5", None))
    loaded = time.perf_counter() - t0
    params = StreamParams(prompts=tuple(prompts), sampler=sampler)
    stream = LMDMStream(model, text, seed=args.seed, params=params)
    for block, prompt in changes:
        stream.at(block, StreamParams(prompts=(_prompt_arg(prompt),), sampler=sampler))
    blocks = max(1, round(args.seconds / model.block_seconds))
    t1 = time.perf_counter()
    parts = [stream.next_block() for _ in range(blocks)]
    parts.append(stream.flush())
    wall = time.perf_counter() - t1
    audio = np.concatenate(parts, axis=1)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), np.clip(audio.T, -1.0, 1.0), model.sample_rate, subtype="PCM_16")
    seconds = audio.shape[1] / model.sample_rate
    return {
        "out": str(out),
        "model": model.name,
        "seconds": round(seconds, 3),
        "blocks": blocks,
        "sample_rate": model.sample_rate,
        "channels": int(audio.shape[0]),
        "peak": round(peak, 4),
        "clipped": peak > 1.0,
        "load_s": round(loaded, 3),
        "render_s": round(wall, 3),
        "x_realtime": round(seconds / wall, 2) if wall > 0 else None,
        "nonfinite_blocks": stream.nonfinite_blocks,
    }


def cmd_play(args) -> int:
    from .model.samplers import SamplerSettings

    prompts = args.prompt or [("", 1.0)]
    print(
        "lmdm-live: the default model has not shipped yet, and the live engine (REPL, OSC, MIDI) is not "
        f"built yet; rendering {args.seconds:g} s from the '{args.model}' model to a WAV file instead.",
        file=sys.stderr,
    )
    if args.model in ("tiny", "small", "saos-random"):
        print(f"lmdm-live: '{args.model}' is randomly initialised: expect noise, not music.", file=sys.stderr)
    info = _render(args, prompts, [], SamplerSettings())
    print(
        f"wrote {info['out']} ({info['seconds']} s at {info['sample_rate']} Hz, "
        f"{info['x_realtime']}x real time)"
    )
    return 0


def cmd_render(args) -> int:
    from .model.samplers import SamplerSettings

    sampler = SamplerSettings(sampler=args.sampler, steps=args.steps, cfg=args.cfg, cfg_pp=args.cfg_pp)
    info = _render(args, args.prompt or [("", 1.0)], args.change, sampler)
    print(json.dumps(info))
    return 0


def cmd_bench(args) -> int:
    import torch

    from .bench import BenchConfig, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BenchConfig(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        context=args.context,
        block=args.block,
        steps=args.steps,
        cfg=args.cfg,
        blocks=args.blocks,
        warmup=args.warmup,
        decode=not args.no_decode,
    )
    result = run_bench(cfg)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(
            f"{result['model']} ({result['params_m']} M) on {result['device']} x{result['threads']} threads, "
            f"{result['context_frames']}/{result['block_frames']} frames, {result['steps']} steps, "
            f"cfg {result['cfg']}"
        )
        for mode, e in result["modes"].items():
            extra = ""
            if "speedup_vs_uncached" in e:
                extra = f"  {e['speedup_vs_uncached']:.2f}x vs uncached  max_rel_err {e['max_rel_err']:.1e}"
            print(
                f"  {mode:9s} {e['ms_per_block']:9.1f} ms/block  {e['x_realtime']:7.2f}x real time  "
                f"{e['query_tokens_per_block']:5d} query tokens{extra}"
            )
    return 0


def cmd_convert(args) -> int:
    from .sao import convert_sao

    config = convert_sao(
        args.ckpt, args.config, args.out, input_add_dim=args.input_add_dim, include_vae=not args.no_vae
    )
    d = config["dit"]
    print(
        f"wrote {args.out}: DiT {d['embed_dim']}x{d['depth']}, input_add_dim {d['input_add_dim']}, "
        f"VAE {'included' if not args.no_vae else 'left out'}"
    )
    return 0


COMMANDS = {"play": cmd_play, "render": cmd_render, "bench": cmd_bench, "convert": cmd_convert}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["play", *argv]
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"lmdm-live: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
