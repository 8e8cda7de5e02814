"""The offline subcommands: render a prompt (or a change script) to a file, replay an event log, measure the
cache and the engine, convert a SAO checkpoint, list what a model knows. Errors are one line (ValueError).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


def prompt_arg(text: str) -> tuple[str, float]:
    """'deep techno' or 'deep techno:0.5' (the weight after the last colon, when it is a number)."""
    head, sep, tail = text.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


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

    from ..live.stream import StreamParams

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


def model_for(args):
    """What an instrument plays for --model: the preset name or path as given (the Instrument loads it), or,
    with a window override (--mode/--context/--block), the model loaded here with it."""
    return load(args) if (args.mode or args.context or args.block) else args.model


def load(args):
    from ..model.bundle import PRESETS, load_model
    from ..model.checkpoint import load_checkpoint_config
    from ..model.lmdm import LMDMConfig
    from ..model.precision import resolve_dtype

    if args.model is None:
        from ..live.instrument import default_model_ref

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


def render(args, prompts, changes, sampler, script: Path | None = None) -> dict:
    from dataclasses import replace

    import numpy as np
    import soundfile as sf

    from ..dsp.limiter import Limiter, LimiterConfig
    from ..live.stream import LMDMStream, StreamParams

    t0 = time.perf_counter()
    model = load(args)
    text = model.text_encoder(getattr(args, "t5", None))
    loaded = time.perf_counter() - t0
    params = StreamParams(
        prompts=tuple(prompts), sampler=model.sampler_settings(**sampler), bpm=getattr(args, "bpm", None)
    )
    stream = LMDMStream(model, text, seed=args.seed, params=params)
    for block, prompt in changes:
        stream.at(block, replace(params, prompts=(prompt_arg(prompt),)))
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
    ceiling = getattr(args, "limiter", None)
    limiter = Limiter(model.sample_rate, LimiterConfig(ceiling=ceiling)) if ceiling is not None else None
    frames = limiter.process(np.ascontiguousarray(audio.T)) if limiter is not None else audio.T
    out = Path(args.out)  # its folder exists (check_out)
    sf.write(str(out), np.clip(frames, -1.0, 1.0), model.sample_rate, subtype="PCM_16")
    seconds = audio.shape[1] / model.sample_rate
    return {
        "out": str(out),
        "model": model.name,
        "seconds": round(seconds, 3),
        "blocks": blocks,
        "sample_rate": model.sample_rate,
        "channels": int(audio.shape[0]),
        "peak": round(peak, 4),  # the model's own, before the limiter
        "limiter_db": round(limiter.reduction_db, 2) if limiter is not None else None,
        "clipped": peak > 1.0 and limiter is None,
        "load_s": round(loaded, 3),
        "render_s": round(wall, 3),
        "x_realtime": round(seconds / wall, 2) if wall > 0 else None,
        "nonfinite_blocks": stream.nonfinite_blocks,
    }


def cmd_render(args) -> int:
    check_out(args.out)
    check_seconds(args.seconds)
    if args.log is not None:
        return _write_replay(args.log, args.out, args.t5)
    sampler = {
        "sampler": args.sampler,
        "steps": args.steps,
        "cfg": args.cfg,
        "cfg_pp": args.cfg_pp,
        "tempo_guidance": args.tempo_guidance,
    }
    info = render(args, args.prompt or [("", 1.0)], args.change, sampler, script=args.script)
    print(json.dumps(info))
    return 0


def cmd_replay(args) -> int:
    check_out(args.out, "out")
    return _write_replay(args.log, args.out, args.t5)


def _write_replay(log: Path, out: Path, t5: str | None) -> int:
    import soundfile as sf

    from ..live.replay import replay

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

    from ..live.bench import BenchConfig, run_bench, settings_for
    from ..live.instrument import default_model_ref

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        args.model = default_model_ref()
    own = settings_for(args.model)  # what the instrument plays it with; the flags override
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in own.items()}
    cfg = BenchConfig(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        blocks=args.blocks,
        warmup=args.warmup,
        decode=not args.no_decode,
        **chosen,
    )
    result = {"model": args.model, "modes": {}} if args.engine_only else run_bench(cfg)
    if args.engine > 0:
        from ..live.bench import run_engine_bench
        from ..model.lmdm import LMDMConfig

        window = LMDMConfig(mode="causal", context_frames=cfg.context, block_frames=cfg.block)
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
            f"cfg {result['cfg']} ({result['sampler']}), {result['dtype']}"
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


def cmd_convert(args) -> int:
    from ..model.sao import convert_sao

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
    from ..model.bundle import LMDMModel
    from ..model.styles import StyleVocabulary

    if args.model is None:
        from ..live.instrument import default_model_ref

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
