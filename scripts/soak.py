"""Soak: play the instrument for a long while under a steady stream of OSC changes, and say whether anything
grew or broke: resident memory at the start and the end, underruns, faults, the changes applied.

    python scripts/soak.py --seconds 600 --osc-rate 200 --out soak.json

A client thread sends `--osc-rate` changes a second over UDP to the instrument's OSC server (prompts, half
of them never seen before, cfg, gain, seed), as a live coder's patterns would; every 10 s the process's
resident memory is noted. Audio goes to JACK when a server runs, else to a WAV file paced in real time
(deleted afterwards). Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from lmdm_live import Instrument  # noqa: E402
from lmdm_live.control.osc import OSCControl  # noqa: E402

WORDS = "dub techno acid house ambient pads choir rain jungle break drone warm tape hiss deep bass".split()


def second_half_slope(rss: list[list[float]]) -> float | None:
    """MB a minute, fitted to the samples of the run's second half."""
    half = [(t, m) for t, m in rss if t >= rss[-1][0] / 2]
    if len(half) < 3:
        return None
    n = len(half)
    mt, mm = sum(t for t, _ in half) / n, sum(m for _, m in half) / n
    var = sum((t - mt) ** 2 for t, _ in half)
    return round(60 * sum((t - mt) * (m - mm) for t, m in half) / var, 3) if var else None


def trimmed_rss_mb() -> float:
    """Resident memory after glibc hands its free heap back (malloc_trim): what is really in use."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_mb()


def rss_mb() -> float:
    """This process's resident memory (VmRSS), in MB."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def message(n: int, rng: random.Random) -> bytes:
    kind = n % 4
    if kind == 0:  # a prompt: every other one never seen before
        words = rng.sample(WORDS, 3)
        text = " ".join(words) + (f" take {n}" if n % 8 == 0 else "")
        address, args = "/lmdm/prompt", [text]
    elif kind == 1:
        address, args = "/lmdm/cfg", [round(1.0 + rng.random() * 2.0, 3)]
    elif kind == 2:
        address, args = "/lmdm/gain", [round(0.6 + rng.random() * 0.4, 3)]
    else:
        address, args = "/lmdm/seed", [rng.randrange(1 << 20)]
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def open_audio(tmp: str, sample_rate: int):
    from lmdm_live.audio import NoAudioDevice, open_backend

    try:
        return open_backend("jack", connect=False)
    except (NoAudioDevice, OSError, RuntimeError):
        return open_backend("file", path=f"{tmp}/soak.wav", sample_rate=sample_rate, realtime=True)


def census() -> dict[str, int]:
    """Live Python objects by type: what grows between two of these is what leaks."""
    import collections
    import gc

    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


def growth(before: dict[str, int], after: dict[str, int], n: int = 12) -> dict[str, int]:
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    return dict(sorted(((k, v) for k, v in diff.items() if v > 0), key=lambda kv: -kv[1])[:n])


def soak(
    seconds: float,
    rate: float,
    model: str | None,
    steps: int | None,
    threads: int | None,
    trace: bool = False,
) -> dict:
    from lmdm_live.live.instrument import default_model_ref
    from lmdm_live.model.bundle import load_model
    from lmdm_live.model.lmdm import LMDMConfig
    from lmdm_live.model.precision import resolve_dtype

    ref = model or default_model_ref()
    window = None if Path(ref).is_file() else LMDMConfig()
    m = load_model(ref, window, "cpu", resolve_dtype("auto", "cpu"))
    tmp = tempfile.TemporaryDirectory()
    inst = Instrument(
        m,
        backend=open_audio(tmp.name, m.sample_rate),
        steps=steps,
        headroom_ms="safe",
        quiet=True,
        start=False,
        threads=threads,
        prompt="dub techno",
    )
    inst.start()
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="soak-osc", daemon=True)
    loop_thread.start()
    osc = OSCControl(inst, port=0, record_dir=tmp.name, patch_dirs=[])
    asyncio.run_coroutine_threadsafe(osc.start(), loop).result(10)

    sent = [0]
    stop = threading.Event()

    def client() -> None:
        rng = random.Random(0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", osc.port)
        t0, period = time.monotonic(), 1.0 / rate
        while not stop.is_set():
            sock.sendto(message(sent[0], rng), target)
            sent[0] += 1
            wait = t0 + sent[0] * period - time.monotonic()
            if wait > 0:
                stop.wait(wait)
        sock.close()

    sender = threading.Thread(target=client, name="soak-client", daemon=True)
    t_start = time.monotonic()
    rss = [(0.0, rss_mb())]
    settle_s = min(60.0, seconds / 2)
    objects: dict = {}
    trimmed: list[tuple[float, float]] = []
    if trace:
        import tracemalloc

        tracemalloc.start()
    sender.start()
    try:
        while (elapsed := time.monotonic() - t_start) < seconds:
            time.sleep(min(10.0, seconds - elapsed))
            rss.append((round(time.monotonic() - t_start, 1), rss_mb()))
            if trace:
                trimmed.append((rss[-1][0], trimmed_rss_mb()))
            if trace and "settled" not in objects and rss[-1][0] >= settle_s:
                objects["settled"], objects["snapshot"] = census(), tracemalloc.take_snapshot()
            print(f"soak: {rss[-1][0]:6.0f} s  RSS {rss[-1][1]} MB  applied {osc.applied}", file=sys.stderr)
    finally:
        stop.set()
        sender.join(5)
        time.sleep(0.5)  # the last packets land
        loop.call_soon_threadsafe(osc.close)
        inst.stop()
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        tmp.cleanup()
    st = inst.status()
    wall = time.monotonic() - t_start
    grew: dict = {}
    if trace and "settled" in objects:
        grew["objects"] = growth(objects["settled"], census())
        stats = tracemalloc.take_snapshot().compare_to(objects["snapshot"], "lineno")
        grew["python_kb"] = {str(s.traceback[0]): round(s.size_diff / 1024, 1) for s in stats[:12]}
    # after the first minute the caches are full: what grows after that is a leak
    settled = next((mb for t, mb in rss if t >= settle_s), rss[0][1])
    return {
        "model": m.name,
        "backend": inst.backend.name,
        "dtype": inst.dtype,
        "seconds": round(wall, 1),
        "osc_rate": rate,
        "sent": sent[0],
        "received": osc.received,
        "applied": osc.applied,
        "errors": osc.errors,
        "blocks": st["blocks"],
        "underruns": st["underruns"],
        "faults": st["faults"],
        "behind_ms_max": st["behind_ms_max"],
        "headroom_ms": st["headroom_ms"],
        "rss_start_mb": rss[0][1],
        "rss_settled_mb": settled,
        "rss_end_mb": rss[-1][1],
        "rss_growth_after_settling_mb_per_min": round((rss[-1][1] - settled) / max((wall - 60) / 60, 1e-9), 2)
        if wall > 120
        else None,
        # a least-squares slope over the second half: one noisy sample cannot make or hide a trend
        "rss_slope_second_half_mb_per_min": second_half_slope(rss),
        "rewinds": st.get("rewinds", 0),
        "rss_mb": rss,
        **({"growth_after_settling": grew, "rss_trimmed_mb": trimmed} if trace else {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--osc-rate", type=float, default=200.0, help="changes a second")
    ap.add_argument("--model", default=None, help="default: the shipped model")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--trace", action="store_true", help="also say what grew (tracemalloc: slower)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.osc_rate <= 0:
        ap.error("--seconds and --osc-rate must be > 0")
    result = soak(args.seconds, args.osc_rate, args.model, args.steps, args.threads, args.trace)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
