"""`lmdm-live bench`: what the block-wise KV cache buys, measured in one run on one machine.

Modes: `uncached` recomputes the whole window at every denoising step (Enc-Dec's masked reference: the same
output as `encdec`, and the token cost of SAOS outpainting); `encdec` caches the context once per block;
`causal` keeps a persistent Block-Causal cache with the fused first step. All three start from the same
random context and seeds, so `max_rel_err` compares the same blocks.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.bundle import LMDMModel, load_model
from ..model.lmdm import LMDM, Conditioning, LMDMConfig, branch_conditioning, query_tokens_per_block
from ..model.samplers import SamplerSettings

MODES = ("uncached", "encdec", "causal")
TARGETS = {"encdec": 3.0, "causal": 4.0}  # speed-up over uncached at 192/48 frames, 8 steps, 2 CPU cores


@dataclass(frozen=True)
class BenchConfig:
    model: str = "tiny"
    device: str = "cpu"
    dtype: str = "float32"  # or "auto": what the instrument picks on this device
    context: int = 192
    block: int = 48
    steps: int = 8
    cfg: float = 1.0
    sampler: str = "pingpong"
    tempo_guidance: float = 0.0  # > 0 times the third (tempo-guidance) row
    blocks: int = 10
    warmup: int = 2
    err_blocks: int = 4
    decode: bool = True
    seed: int = 0


PRESET_SETTINGS = {
    "context": 192,
    "block": 48,
    "steps": 8,
    "cfg": 1.0,
    "sampler": "pingpong",
    "tempo_guidance": 0.0,
}


def settings_for(model: str) -> dict:
    """What the instrument plays `model` with when nothing is overridden: a model file's saved window and
    sampler, or for a random preset the reference point of the cache figures (192/48 frames, 8 steps)."""
    from ..model.bundle import PRESETS
    from ..model.checkpoint import load_checkpoint_config

    if model in PRESETS:
        return dict(PRESET_SETTINGS)
    if not Path(model).is_file():
        raise FileNotFoundError(f"model file not found: {model} (presets: {', '.join(PRESETS)})")
    config = load_checkpoint_config(model)
    window, sampler = config.get("lmdm", {}), SamplerSettings(**config.get("sampler", {}))
    base = LMDMConfig(**window)
    return {
        "context": base.context_frames,
        "block": base.block_frames,
        "steps": sampler.steps,
        "cfg": sampler.cfg,
        "sampler": sampler.sampler,
        "tempo_guidance": sampler.tempo_guidance,
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _conditioning(model: LMDMModel, s: SamplerSettings, seed: int) -> Conditioning:
    """Random text tokens through the real conditioning path: no text encoder needed to time the DiT. The
    rows are the sampler's branches, as the stream builds them."""
    p = next(model.net.parameters())
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(1, 64, model.dit.cfg.cond_token_dim, generator=g).to(p.device, p.dtype)
    cross, glob = model.net.conditioning(tokens, [model.seconds_total])
    return branch_conditioning(model.dit, cross, glob, s, model.layout.offsets()["tempo"])


@torch.no_grad()
def _interleaved(
    runs: dict[str, tuple[LMDM, bool]],
    cond: Conditioning,
    s: SamplerSettings,
    context: torch.Tensor,
    n: int,
    warmup: int,
    seed: int,
) -> dict[str, tuple[list[float], torch.Tensor]]:
    """Time every mode block by block in round-robin, so a shared machine's load drifts over all alike.

    Returns per mode the ms of blocks warmup..warmup+n-1 and every block generated (for the error check).
    """
    states = {name: lm.new_state(cond.rows, context) for name, (lm, _) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    blocks: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    for b in range(warmup + n):
        for name, (lm, cached) in runs.items():
            gen = torch.Generator().manual_seed(seed + b)
            _sync(lm.device)
            t0 = time.perf_counter()
            blocks[name].append(lm.generate(states[name], cond, s, gen, cached=cached))
            _sync(lm.device)
            if b >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (times[name], torch.cat(blocks[name], dim=2).float()) for name in runs}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@torch.no_grad()
def _decode_ms(model: LMDMModel, block: int, n: int, warmup: int) -> float:
    dec = model.codec.streaming_decoder()
    p = next(model.net.parameters())
    lat = torch.randn(1, model.codec.dim, block).to(p.device)
    times = []
    for b in range(warmup + n):
        _sync(p.device)
        t0 = time.perf_counter()
        dec.push(lat)
        _sync(p.device)
        if b >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_bench(cfg: BenchConfig) -> dict:
    from ..model.precision import dtype_name, resolve_dtype

    dtype = torch.float16 if cfg.dtype == "float16" else resolve_dtype(cfg.dtype, cfg.device)
    sampler = SamplerSettings(
        sampler=cfg.sampler, steps=cfg.steps, cfg=cfg.cfg, tempo_guidance=cfg.tempo_guidance
    )
    windows = {
        m: LMDMConfig(mode=m, context_frames=cfg.context, block_frames=cfg.block)
        for m in ("encdec", "causal")
    }
    model = load_model(cfg.model, windows["encdec"], cfg.device, dtype)
    p = next(model.net.parameters())
    device = p.device
    g = torch.Generator().manual_seed(cfg.seed)
    context = torch.randn(1, model.dit.cfg.io_channels, cfg.context, generator=g).to(device, p.dtype)
    block_s = model.block_seconds
    result: dict = {
        "model": cfg.model,
        "params_m": round(sum(p.numel() for p in model.dit.parameters()) / 1e6, 2),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "dtype": dtype_name(dtype),
        "context_frames": cfg.context,
        "block_frames": cfg.block,
        "steps": cfg.steps,
        "cfg": cfg.cfg,
        "sampler": sampler.sampler,
        "tempo_guidance": cfg.tempo_guidance,
        "rows": sampler.rows,
        "block_seconds": round(block_s, 4),
        "blocks_timed": cfg.blocks,
        "warmup_blocks": cfg.warmup,
        "modes": {},
    }
    cond = _conditioning(model, sampler, cfg.seed)
    lmdms = {mode: LMDM(model.dit, windows["encdec" if mode == "uncached" else mode]) for mode in MODES}
    timed = _interleaved(
        {m: (lmdms[m], m != "uncached") for m in MODES},
        cond,
        sampler,
        context,
        cfg.blocks,
        cfg.warmup,
        cfg.seed,
    )
    k = min(cfg.err_blocks, cfg.blocks + cfg.warmup)
    # Block-Causal's own uncached reference (every frame since the start, masked), on the first k blocks
    causal_ref = _interleaved({"ref": (lmdms["causal"], False)}, cond, sampler, context, k, 0, cfg.seed)[
        "ref"
    ][1]
    for mode in MODES:
        times, blocks = timed[mode]
        ms = statistics.median(times)
        entry = {
            "ms_per_block": round(ms, 3),
            "ms_min": round(min(times), 3),
            "ms_max": round(max(times), 3),
            "rtf": round(ms / 1e3 / block_s, 5),
            "x_realtime": round(block_s / (ms / 1e3), 3),
            "query_tokens_per_block": query_tokens_per_block(
                LMDMConfig("bidirectional", cfg.context, cfg.block)
                if mode == "uncached"
                else lmdms[mode].cfg,
                cfg.steps,
            ),
        }
        if mode == "encdec":
            entry["max_rel_err"] = _rel_err(blocks, timed["uncached"][1])
        if mode == "causal":
            entry["max_rel_err"] = _rel_err(blocks[:, :, : k * cfg.block], causal_ref)
            entry["max_rel_err_blocks"] = k
        result["modes"][mode] = entry
    base = result["modes"]["uncached"]["ms_per_block"]
    for mode in ("encdec", "causal"):
        e = result["modes"][mode]
        e["speedup_vs_uncached"] = round(base / e["ms_per_block"], 3)
        e["target_speedup"] = TARGETS[mode]
        e["meets_target"] = e["speedup_vs_uncached"] >= TARGETS[mode]
    if cfg.decode:
        dec = _decode_ms(model, cfg.block, max(3, cfg.blocks // 2), 1)
        result["decode_ms_per_block"] = round(dec, 3)
        for mode in ("encdec", "causal"):
            e = result["modes"][mode]
            e["x_realtime_with_decode"] = round(block_s / ((e["ms_per_block"] + dec) / 1e3), 3)
    return result


CHANGE_PROMPTS = ("deep techno", "ambient pads", "jungle breaks", "solo piano")


def run_engine_bench(
    seconds: float,
    model: str = "tiny",
    backend: str | None = None,
    steps: int | None = 8,
    headroom: str | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    latency: str = "normal",
    window: LMDMConfig | None = None,
    cfg: float | None = None,
    change_every: float = 2.0,
) -> dict:
    """Play `seconds` through the real-time engine and report what the audio side saw, and how long each
    of the prompt changes made every `change_every` seconds took to be heard (`status()`'s latency).

    Uses JACK when a server is running (never starts one), else a WAV file paced in real time. A preset
    plays `window` (default: the default LMDMConfig); a model file plays the window it was saved with.
    """
    import tempfile

    from ..audio import NoAudioDevice, open_backend
    from ..model.precision import model_dtype_name, resolve_dtype
    from .instrument import Instrument

    tmp = tempfile.TemporaryDirectory()
    try:
        try:
            be = open_backend(backend or "jack", connect=False) if backend != "file" else None
        except (NoAudioDevice, OSError, RuntimeError):
            be = None
        window = None if Path(model).is_file() else window or LMDMConfig()
        m = load_model(model, window, "cpu", resolve_dtype(dtype, "cpu"))
        if be is None:
            be = open_backend("file", path=f"{tmp.name}/engine.wav", sample_rate=m.sample_rate, realtime=True)
        inst = Instrument(
            m,
            backend=be,
            steps=steps,  # None: the model's own, as the preset plays them (`LatencyPreset.steps`)
            cfg=cfg,
            headroom_ms=headroom,
            latency=latency,
            quiet=True,
            start=False,
            threads=threads,
            prompt=CHANGE_PROMPTS[0],
        )
        inst.start()
        t0 = time.monotonic()
        changes = 0
        try:
            while (left := seconds - (time.monotonic() - t0)) > 0:
                time.sleep(min(change_every, left) if change_every > 0 else left)
                if change_every > 0 and seconds - (time.monotonic() - t0) > 1.0:
                    changes += 1
                    inst.prompt(CHANGE_PROMPTS[changes % len(CHANGE_PROMPTS)])
        finally:
            inst.stop()
        st = inst.status()
        heard = list(inst.engine.stats.latency_ms)
        return {
            "backend": be.name,
            "dtype": model_dtype_name(m.net),
            "threads": inst.threads,
            "seconds": round(time.monotonic() - t0, 2),
            "sample_rate": inst.engine.out_rate,
            "buffer_frames": be.blocksize,
            "callbacks": be.stats.callbacks,
            "callback_ms_mean": round(be.stats.mean_ms, 4) if be.stats.callbacks else None,
            "callback_ms_max": round(be.stats.max_ms, 4) if be.stats.callbacks else None,
            "ring_min_ms": st["ring_min_ms"],
            "headroom_ms": st["headroom_ms"],
            "underruns": st["underruns"],
            "behind_ms_max": st["behind_ms_max"],
            "blocks": st["blocks"],
            "ms_per_block": st["ms_per_block"],
            "x_realtime_with_decode": st["x_realtime"],
            "faults": st["faults"],
            "latency_preset": latency,
            "steps": inst.stream.params.sampler.steps,
            "changes": changes,
            "rewinds": st["rewinds"],
            "latency_ms_median": round(statistics.median(heard), 1) if heard else None,
            "latency_ms_max": st["latency_ms_max"],
            "latency": inst.latency(),
        }
    finally:
        tmp.cleanup()
