"""Render examples/changes.py offline, faster than real time, through the same stream the live engine uses.

    python examples/render_script.py --seconds 48 --out out/changes.wav [--model PATH]

is the same as

    lmdm-live render --script examples/changes.py --seconds 48 --out out/changes.wav [--model PATH]

with a summary of the changes printed first. Same model, seed and script give the same audio every time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "changes.py"


def main(argv: list[str] | None = None) -> dict:
    from lmdm_live.cli import main as cli
    from lmdm_live.control.commands import load_script
    from lmdm_live.live.stream import StreamParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=48.0)
    ap.add_argument("--out", default="out/changes.wav")
    ap.add_argument("--script", type=Path, default=SCRIPT)
    args, rest = ap.parse_known_args(argv)  # the rest (--model, --steps, --seed, ...) go to the renderer

    # the schedule on a 10 ms grid, to show when each change comes (the renderer uses the model's blocks)
    for tick, p in sorted(load_script(args.script, StreamParams(), block_seconds=0.01).items()):
        s = p.sampler
        guide = f"cfg++ {s.cfg_pp}" if s.cfg_pp is not None else f"cfg {s.cfg:g}"
        blend = " + ".join(f"{t[:28]}:{w:g}" for t, w in p.prompts)
        print(f"{tick / 100:6.2f} s  {blend}  ({s.sampler}, {s.steps} steps, {guide})", file=sys.stderr)

    argv = ["render", "--script", str(args.script), "--seconds", str(args.seconds), "--out", args.out, *rest]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(argv)
    if rc != 0:
        raise SystemExit(rc)
    info = json.loads(buf.getvalue())
    print(
        f"wrote {info['out']}: {info['seconds']} s in {info['render_s']} s ({info['x_realtime']}x real time)",
        file=sys.stderr,
    )
    return info


if __name__ == "__main__":
    main()
