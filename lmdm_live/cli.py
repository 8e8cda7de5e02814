"""`lmdm-live`: the command line. Each subcommand is a thin layer over the library; errors are one line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .eval import cli as eval_cli
from .model.precision import DTYPES
from .train import cli as train_cli

DEFAULT_OUT = Path("out/lmdm-live.wav")
DEFAULT_RECORD_DIR = Path("recordings")


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
        "--model",
        default=None,
        help="PATH to an LMDM .safetensors (default: the shipped model), or a random preset on purpose: "
        "tiny | small | tiny-mel | saos-random",
    )
    p.add_argument("--mode", choices=("encdec", "causal", "bidirectional"), help="override the model's mode")
    p.add_argument("--context", type=int, help="context frames C (override)")
    p.add_argument("--block", type=int, help="block frames T (override)")
    p.add_argument("--t5", help="local t5-base directory, for models conditioned on T5")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the DiT's (auto: bfloat16 where the CPU multiplies it natively, else float32)",
    )


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, else 8)")
    p.add_argument("--sampler", choices=("pingpong", "euler"), default=None, help="default: the model's")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--cfg-pp", type=float, default=None, help="CFG++ lambda (replaces --cfg)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lmdm-live", description="A live music diffusion model you can play.")
    sub = ap.add_subparsers(dest="command")

    play = sub.add_parser("play", help="start the instrument (default): REPL, or --headless")
    _add_model_args(play)
    play.add_argument("--prompt", action="append", type=_prompt_arg, help="TEXT[:WEIGHT], repeatable")
    play.add_argument(
        "--backend",
        choices=("jack", "sounddevice", "file"),
        default=None,
        help="audio out (default: JACK if a server runs, else a sound card, else a WAV file)",
    )
    play.add_argument(
        "--out", type=Path, default=None, help="WAV file for the file backend (in a folder that exists)"
    )
    play.add_argument(
        "--record-dir",
        type=Path,
        default=None,
        help="where OSC /lmdm/record writes (default: the --out folder, else recordings/)",
    )
    play.add_argument(
        "--audio-device", dest="audio_device", default=None, help="sounddevice output NAME|INDEX"
    )
    play.add_argument(
        "--headroom",
        default=None,
        help="ring headroom: tight|normal|safe or milliseconds (default: the --latency's)",
    )
    play.add_argument(
        "--latency",
        choices=("normal", "low"),
        default="normal",
        help="low: changes cut into the block playing, less audio queued, at most 4 steps (see the model card)",
    )
    play.add_argument("--seed", type=int, default=0)
    play.add_argument(
        "--threads", type=int, default=None, help="torch threads for the model (default: all cores but one)"
    )
    play.add_argument("--steps", type=int, default=None, help="default: the model's own (else 8)")
    play.add_argument("--cfg", type=float, default=None, help="default: the model's own (else 1)")
    play.add_argument("--log", type=Path, default=None, help="write the event log here (for `replay`)")
    play.add_argument("--headless", action="store_true", help="no REPL: run until SIGINT/SIGTERM")
    play.add_argument("--seconds", type=float, default=None, help="headless: stop after this many seconds")
    play.add_argument(
        "--osc-host", default="127.0.0.1", help="OSC address to listen on (loopback by default)"
    )
    play.add_argument("--osc-port", type=int, default=57140, help="OSC port (0 = no OSC)")
    play.add_argument(
        "--osc-allow", action="append", default=None, help="client IP allowed to control, repeatable"
    )
    play.add_argument(
        "--midi-in",
        nargs="?",
        const="",
        default=None,
        help="MIDI input NAME (no name: a virtual input to connect to)",
    )
    play.add_argument("--patch", type=Path, default=None, help="play a patch file and reload it on save")
    play.add_argument(
        "--clock",
        choices=("internal", "midi", "tidal", "link"),
        default="internal",
        help="tempo source for at='beat'/'bar': inst.bpm, MIDI clock, Tidal's cps, or Ableton Link",
    )
    play.add_argument("--midi-api", choices=("alsa", "jack"), default=None, help="force a MIDI system")

    render = sub.add_parser("render", help="render a stream offline to a WAV file (same LMDMStream as live)")
    _add_model_args(render)
    _add_sampler_args(render)
    render.add_argument("--bpm", type=float, default=120.0, help="tempo for models with tempo channels")
    render.add_argument("--prompt", action="append", type=_prompt_arg, help="TEXT[:WEIGHT], repeatable")
    render.add_argument(
        "--change",
        action="append",
        type=_change_arg,
        default=[],
        help="BLOCK=PROMPT: switch prompt at that block index, repeatable",
    )
    render.add_argument(
        "--script", type=Path, help="a Python file of at(block|'Ns', prompt=..., cfg=...) changes"
    )
    render.add_argument("--log", type=Path, help="render a logged live performance instead (same as replay)")
    render.add_argument("--seconds", type=float, default=10.0)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--out", type=Path, required=True)

    st = sub.add_parser("styles", help="list the styles the model was trained on")
    st.add_argument("--model", default=None, help="PATH to an LMDM .safetensors (default: the shipped model)")
    st.add_argument("--near", metavar="PROMPT", help="also rank the styles by how near they are to PROMPT")
    st.add_argument("--json", action="store_true", help="print one JSON object")

    rp = sub.add_parser("replay", help="rebuild a live performance from its event log, sample for sample")
    rp.add_argument("log", type=Path)
    rp.add_argument("out", type=Path)
    rp.add_argument("--t5", help="local t5-base directory, for models conditioned on T5")

    bench = sub.add_parser("bench", help="measure the cost of a block in each mode")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--model", default="tiny", help="tiny | small | tiny-mel | saos-random | PATH")
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
    bench.add_argument(
        "--engine",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also play SECONDS through the real-time engine (JACK if running, else a paced file)",
    )
    bench.add_argument("--engine-only", action="store_true", help="skip the per-mode cache figures")
    bench.add_argument("--latency", choices=("normal", "low"), default="normal", help="the engine's preset")
    bench.add_argument(
        "--change-every",
        type=float,
        default=2.0,
        help="seconds between the engine's prompt changes (0: none)",
    )

    train_cli.add_parser(sub)
    eval_cli.add_parser(sub)

    convert = sub.add_parser("convert", help="convert checkpoints into the lmdm_live format")
    csub = convert.add_subparsers(dest="source", required=True)
    sao = csub.add_parser("sao", help="Stable Audio Open Small -> LMDM checkpoint")
    sao.add_argument("--ckpt", "--checkpoint", dest="ckpt", required=True, help=".safetensors or .ckpt")
    sao.add_argument("--config", required=True, help="model_config.json")
    sao.add_argument("--out", required=True, help="output .safetensors")
    sao.add_argument("--input-add-dim", type=int, default=None, help="default 1 + io_channels (65)")
    sao.add_argument("--no-vae", action="store_true", help="leave the autoencoder out")
    return ap


def check_out(path: Path | None, flag: str = "--out") -> None:
    """A WAV file the user named: a .wav name in a folder that exists (none is created), and not a device or
    a folder. ValueError with one line otherwise."""
    if path is None:
        return
    if path.exists() and not path.is_file():
        raise ValueError(f"{flag} {path} is not a regular file")
    if path.suffix.lower() != ".wav":
        raise ValueError(f"{flag} must name a .wav file (the instrument writes WAV), got {str(path)!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{flag}: folder {str(folder)!r} does not exist (create it first; none is created)")


def check_seconds(seconds: float | None, flag: str = "--seconds") -> None:
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{flag} must be a number of seconds > 0, got {seconds:g}")


# --- render scripts ---


def load_script(path: Path, start, block_seconds: float) -> dict:
    """Run a change script: each `at(when, prompt=..., prompts={...}, cfg=..., cfg_pp=..., steps=...,
    sampler=...)` builds on the previous snapshot; `when` is a block index or "12.5s". Returns {block: params}."""
    from dataclasses import replace

    from .stream import StreamParams

    if not Path(path).is_file():
        raise FileNotFoundError(f"script not found: {path}")
    schedule: dict[int, StreamParams] = {}
    current = [start]
    sampler_keys = ("cfg", "cfg_pp", "steps", "sampler")

    def at(when, **kw):
        if isinstance(when, str) and when.endswith("s"):
            block = round(float(when[:-1]) / block_seconds)
        elif isinstance(when, int) and not isinstance(when, bool) and when >= 0:
            block = when
        else:
            raise ValueError(f"at() takes a block index or 'N.Ns', got {when!r}")
        unknown = set(kw) - {"prompt", "prompts", "eject_frames", "bpm", *sampler_keys}
        if unknown:
            raise ValueError(f"at() does not know {', '.join(sorted(unknown))}")
        p = current[0]
        if "prompt" in kw:
            p = replace(p, prompts=((kw["prompt"], 1.0),))
        if "prompts" in kw:
            p = replace(p, prompts=tuple(kw["prompts"].items()))
        if "bpm" in kw:
            p = replace(p, bpm=float(kw["bpm"]))
        if "eject_frames" in kw:
            p = replace(p, eject_frames=kw["eject_frames"])
        s = {k: kw[k] for k in sampler_keys if k in kw}
        if s:
            p = replace(p, sampler=replace(p.sampler, **s))
        current[0] = schedule[block] = p

    try:
        code = compile(Path(path).read_text(), str(path), "exec")
    except SyntaxError as e:
        raise ValueError(f"{Path(path).name}:{e.lineno}: {e.msg}") from None
    exec(code, {"at": at, "__name__": "__lmdm_script__"})
    return schedule


# --- commands -------------------------------------------------------------------------------------------


def _load(args):
    from .bench import load_model
    from .model.bundle import PRESETS
    from .model.checkpoint import load_checkpoint_config
    from .model.lmdm import LMDMConfig
    from .model.precision import resolve_dtype

    if args.model is None:
        from .instrument import default_model_ref

        args.model = default_model_ref()
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
    return load_model(args.model, window, args.device, resolve_dtype(args.dtype, args.device))


def _render(args, prompts, changes, sampler, script: Path | None = None) -> dict:
    from dataclasses import replace

    import numpy as np
    import soundfile as sf

    from .stream import LMDMStream, StreamParams

    t0 = time.perf_counter()
    model = _load(args)
    text = model.text_encoder(getattr(args, "t5", None))
    loaded = time.perf_counter() - t0
    params = StreamParams(
        prompts=tuple(prompts), sampler=model.sampler_settings(**sampler), bpm=getattr(args, "bpm", None)
    )
    stream = LMDMStream(model, text, seed=args.seed, params=params)
    for block, prompt in changes:
        stream.at(block, replace(params, prompts=(_prompt_arg(prompt),)))
    if script is not None:
        for block, p in load_script(script, params, model.block_seconds).items():
            stream.at(block, p)
    blocks = max(1, round(args.seconds / model.block_seconds))
    t1 = time.perf_counter()
    parts = [stream.next_block() for _ in range(blocks)]
    parts.append(stream.flush())
    wall = time.perf_counter() - t1
    audio = np.concatenate(parts, axis=1)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    out = Path(args.out)  # its folder exists (check_out)
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
    import asyncio

    from .engine import underruns_from_load
    from .instrument import HEADROOM_PRESETS_MS, Instrument

    check_out(args.out)
    check_seconds(args.seconds)
    headroom = args.headroom
    if headroom is not None and headroom not in HEADROOM_PRESETS_MS:
        try:
            headroom = float(headroom)
        except ValueError:
            raise SystemExit(
                f"lmdm-live: error: --headroom must be tight, normal, safe or milliseconds, got {headroom!r}"
            ) from None
    model = args.model
    if model is not None and (args.mode or args.context or args.block):
        model = _load(args)  # a window override: load here, the instrument takes the model as it is
    elif model is None and (args.mode or args.context or args.block):
        from .instrument import default_model_ref

        args.model = default_model_ref()
        model = _load(args)
    inst = Instrument(
        model,
        backend=args.backend,
        out=args.out,
        device=args.audio_device,
        headroom_ms=headroom,
        latency=args.latency,
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        log=args.log,
        t5=args.t5,
        start=False,
        model_ref=args.model,
        dtype=args.dtype,
        threads=args.threads,
    )
    prompts = args.prompt or [("", 1.0)]
    if len(prompts) == 1:
        inst.prompt(prompts[0][0])
    else:
        inst.prompts(dict(prompts))
    inst.start()
    name = getattr(inst.backend, "name", "?")
    where = f" -> {inst.backend.path}" if hasattr(inst.backend, "path") else ""
    print(
        f"lmdm-live: playing '{inst.model.name}' ({inst.dtype}) through {name}{where} at {inst.engine.out_rate} Hz; "
        f"latency {inst.latency()['total_ms']:.0f} ms worst case",
        file=sys.stderr,
    )
    try:
        asyncio.run(_session(inst, args))
    finally:
        inst.stop()
        st = inst.status()
        why = ""
        if st["underruns"] and underruns_from_load(st):
            why = (
                f" (blocks fell up to {st['behind_ms_max']:.0f} ms behind real time: the machine was too busy for "
                "these settings; try fewer --steps or a bigger --headroom)"
            )
        print(
            f"lmdm-live: stopped after {st['blocks']} blocks, {st['underruns']} underruns{why}, "
            f"{st['faults']} faults",
            file=sys.stderr,
        )
    return 0


async def _session(inst, args) -> None:
    """The control loop: OSC, MIDI and the patch watcher beside the REPL (or until a signal, headless)."""
    import asyncio
    import signal

    from .control.clock import Clock
    from .control.repl import run_repl, run_source, toolbar_text

    loop = asyncio.get_running_loop()
    clock = Clock(inst, "internal")
    ns: dict = {"inst": inst, "clock": clock}
    osc = midi = None
    try:
        if args.clock != "internal":
            clock.use(args.clock)
        if args.osc_port:
            from .control.osc import OSCControl

            osc = OSCControl(
                inst,
                host=args.osc_host,
                port=args.osc_port,
                allow=args.osc_allow,
                patch_loader=inst.load,
                record_dir=record_dir(args),
            )
            osc.clock = clock
            ns["osc"] = osc
        if args.midi_in is not None:
            from .control.midi import MidiControl

            midi = MidiControl(
                inst,
                port=args.midi_in or None,
                api=args.midi_api,
                clock=clock,
                patch_loader=inst.load,
                loop=loop,
            )
            ns["midi"] = midi
            print(f"lmdm-live: MIDI in from {midi.port}", file=sys.stderr)
        if args.patch is not None:

            def install(controls) -> None:
                if midi is not None:
                    midi.install(controls)
                if osc is not None:
                    osc.set_aliases(dict(controls.osc_aliases))

            ns["patch"] = inst.watch(args.patch, at="now", on_load=install)
        if (
            osc is not None
        ):  # listen once the patch is in: a message never lands under a patch applied after it
            await osc.start()
            print(f"lmdm-live: OSC on {args.osc_host}:{args.osc_port} (docs/osc.md)", file=sys.stderr)
        if args.headless:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await asyncio.wait_for(stop.wait(), args.seconds)
            except TimeoutError:
                pass
        elif sys.stdin.isatty():
            await run_repl(
                ns,
                lambda: toolbar_text(inst),
                history_path=Path.home() / ".lmdm_live_history",
                banner="inst is playing. Try inst.prompt('dub techno'), inst.status(); Ctrl-D quits.",
            )
        else:  # piped input: one statement per line, no prompt
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                run_source(line.rstrip("\n"), ns)
    finally:
        inst.unwatch()
        if midi is not None:
            midi.close()
        if osc is not None:
            osc.close()


def record_dir(args) -> Path:
    """Where OSC recordings go: --record-dir, else beside --out, else recordings/."""
    if args.record_dir is not None:
        return args.record_dir
    return args.out.parent if args.out is not None else DEFAULT_RECORD_DIR


def cmd_render(args) -> int:
    check_out(args.out)
    check_seconds(args.seconds)
    if args.log is not None:
        return _write_replay(args.log, args.out, args.t5)
    sampler = {"sampler": args.sampler, "steps": args.steps, "cfg": args.cfg, "cfg_pp": args.cfg_pp}
    info = _render(args, args.prompt or [("", 1.0)], args.change, sampler, script=args.script)
    print(json.dumps(info))
    return 0


def cmd_replay(args) -> int:
    check_out(args.out, "out")
    return _write_replay(args.log, args.out, args.t5)


def _write_replay(log: Path, out: Path, t5: str | None) -> int:
    import soundfile as sf

    from .replay import replay

    t0 = time.perf_counter()
    audio, rate = replay(log, t5_path=t5)
    sf.write(str(out), audio, rate, subtype="FLOAT")  # float: the samples exactly as played
    print(
        json.dumps(
            {
                "out": str(out),
                "seconds": round(len(audio) / rate, 3),
                "sample_rate": rate,
                "render_s": round(time.perf_counter() - t0, 3),
            }
        )
    )
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
    result = {"model": args.model, "modes": {}} if args.engine_only else run_bench(cfg)
    if args.engine > 0:
        from .bench import run_engine_bench
        from .model.lmdm import LMDMConfig

        window = LMDMConfig(mode="causal", context_frames=args.context, block_frames=args.block)
        result["engine"] = run_engine_bench(
            args.engine,
            model=args.model,
            steps=args.steps,
            dtype=args.dtype,
            threads=args.threads,
            latency=args.latency,
            window=window,
            cfg=args.cfg,
            change_every=args.change_every,
        )
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    elif result["modes"]:
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
    if not args.json and "engine" in result:
        print("engine: " + ", ".join(f"{k} {v}" for k, v in result["engine"].items()))
    return 0


def cmd_train(args) -> int:
    return train_cli.run(args)


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


def cmd_styles(args) -> int:
    from .model.bundle import LMDMModel
    from .model.styles import StyleVocabulary

    if args.model is None:
        from .instrument import default_model_ref

        args.model = default_model_ref()
    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    model = LMDMModel.load(args.model)
    near = None
    if args.near is not None:
        near = StyleVocabulary(dict(model.styles)).nearest(
            args.near, model.text_encoder(), k=len(model.styles)
        )
    if args.json:
        print(json.dumps({"model": model.name, "styles": model.styles, "near": near}, indent=1))
        return 0
    if not model.styles:
        print(f"{model.name} lists no styles (a model trained before models listed what they know)")
        return 0
    width = max(len(s) for s in model.styles)
    for style, line in model.styles.items():
        print(f"{style:<{width}}  {line}")
    if near is not None:
        print(f"\nnearest to {args.near!r}: " + ", ".join(f"{s} ({c:.2f})" for s, c in near[:5]))
    return 0


COMMANDS = {
    "styles": cmd_styles,
    "play": cmd_play,
    "render": cmd_render,
    "replay": cmd_replay,
    "bench": cmd_bench,
    "convert": cmd_convert,
    "train": cmd_train,
    "eval": eval_cli.run,
}


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
