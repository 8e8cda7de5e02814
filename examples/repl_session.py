"""A live-coding session with `Instrument`, written down.

Run it to hear one (`python examples/repl_session.py`, or `--model PATH` for a trained model), or type the
lines of `session` one by one into `lmdm-live`, whose REPL holds the same `inst`. Every change below is
quantised to the beat or bar grid, so it lands in time however late in the bar the line is typed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

DUB = "dub techno, deep filtered chord stabs with tape delay echoes, muffled kick, vinyl hiss, 122 BPM"
CHOIR = "shimmering choir, long reverb tail"


def session(inst, bars: Callable[[float], None]) -> None:
    """The performance: `bars(n)` lets n bars play before the next line (the performer thinking)."""
    inst.bpm(122)  # the grid that at="beat"/"bar" snap to
    inst.prompt(DUB, at="bar")
    bars(2)

    # bring a choir in under the stabs, louder each beat: a blend is a weighted mix of prompts
    for w in (0.1, 0.25, 0.4):
        inst.prompts({DUB: 1.0, CHOIR: w}, at="beat")
        bars(0.25)
    bars(1)

    # a guidance sweep: higher cfg follows the prompt harder (and costs a second pass per step)
    for scale in (1.5, 2.5, 4.0):
        inst.cfg(scale, at="beat")
        bars(0.5)
    inst.cfg_pp(0.8, at="bar")  # CFG++: strong prompt adherence with fewer artefacts
    bars(1)
    inst.cfg(1.0, at="bar")  # back to unguided (this also turns CFG++ off)

    # a new variation of the same groove: another seed, and forget the old context
    inst.seed(7, at="bar")
    inst.drop_context(at="bar")
    bars(2)

    # load a whole patch: prompts, sampler, gain, tempo and seed change together on the next bar
    controls = inst.load("acid")
    print(
        f"acid loaded: {len(controls.cc)} knobs, {len(controls.notes)} pads, {len(controls.osc_aliases)} OSC aliases"
    )
    bars(4)
    print(inst.status())
    # to shape a patch while it plays: inst.watch("patches/acid.toml"), then edit and save the file; each good
    # save is heard on the next bar, a broken one is reported with its line and the sound plays on


def main(argv: list[str] | None = None) -> None:
    from lmdm_live import Instrument

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="preset name or checkpoint (default: the shipped model)")
    ap.add_argument("--backend", choices=("jack", "sounddevice", "file"), default=None)
    ap.add_argument("--out", default=None, help="WAV file when playing to a file")
    args = ap.parse_args(argv)
    with Instrument(args.model, backend=args.backend, out=args.out) as inst:
        session(inst, lambda n: time.sleep(n * 4 * 60 / inst.bpm()))
        inst.mute(at="bar")
        time.sleep(4 * 60 / inst.bpm() + 0.5)


if __name__ == "__main__":
    main()
