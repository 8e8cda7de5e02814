"""Play a running instrument from a MIDI controller: knobs, keys, program changes and MIDI clock.

    python examples/midi_controller.py                       # a virtual input, lmdm-live:midi_in
    python examples/midi_controller.py --midi-in nanoKONTROL # open a named input (a unique part of it)
    python examples/midi_controller.py --clock midi          # follow the tempo of an incoming MIDI clock
    python examples/midi_controller.py --learn cfg           # the first knob you move drives cfg

With a virtual input, patch your controller or sequencer into it (JACK: `jack_connect SOURCE
lmdm-live:midi_in`, or a patchbay; ALSA: `aconnect`). Every few seconds the script prints the tempo,
the prompt blend and what arrived; Ctrl-C stops it. `--save FILE.json` writes the mappings you ended up
with (learned ones included), the `[midi]` part of a patch in JSON form.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from lmdm_live import Instrument
from lmdm_live.control.clock import Clock
from lmdm_live.control.midi import MidiControl

DUB = "dub techno, deep filtered chord stabs with tape delay echoes, muffled kick, 122 BPM"
CHOIR = "shimmering choir, long reverb tail"
STRINGS = "slow cinematic strings"

# knobs: the usual CC numbers of a generic controller (74 cutoff, 71 resonance, 7 volume, 1 mod wheel)
KNOBS = [
    {"cc": 74, "param": "cfg", "lo": 1.0, "hi": 6.0, "curve": "exp"},
    {"cc": 71, "param": f"weight:{CHOIR}", "lo": 0.0, "hi": 1.0},
    {"cc": 7, "param": "gain", "lo": 0.0, "hi": 1.2},
    {"cc": 1, "param": "steps", "lo": 2, "hi": 12},
]
# keys: hold one to bring its prompt into the blend
KEYS = [
    {"note": 48, "prompt": CHOIR, "weight": 0.6},
    {"note": 50, "prompt": STRINGS, "weight": 0.5},
    {"note": 52, "prompt": "rolling breakbeat", "weight": 0.8},
]
# program changes: shipped patches
PROGRAMS = {0: "dub_techno", 1: "acid", 2: "ambient", 3: "drone"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model preset or checkpoint (default: the shipped one)")
    ap.add_argument(
        "--backend", default=None, help="jack | sounddevice | file (default: the first that works)"
    )
    ap.add_argument("--out", default=None, help="WAV file for the file backend")
    ap.add_argument("--midi-in", default=None, help="a MIDI input to open (default: a virtual input)")
    ap.add_argument("--api", choices=("alsa", "jack"), default=None, help="force the MIDI api")
    ap.add_argument("--clock", choices=("internal", "midi"), default="internal", help="tempo source")
    ap.add_argument("--learn", default=None, help="bind the first knob moved to this param (e.g. cfg)")
    ap.add_argument("--save", type=Path, default=None, help="write the mappings here (JSON) on exit")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = ap.parse_args()
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    inst = Instrument(args.model, backend=args.backend, out=args.out, prompt=DUB)
    clock = Clock(inst, args.clock)

    def load(name: str):
        controls = inst.load(name, at="bar")  # heard from the next bar
        print(f"patch {name!r} loaded")
        return controls  # its own knobs and keys: MidiControl installs them

    midi = MidiControl(
        inst,
        port=args.midi_in,
        api=args.api,
        clock=clock,
        patch_loader=load,
        mappings=KNOBS,
        notes=KEYS,
        programs=PROGRAMS,
        at="beat",  # keys change the blend on the next beat
    )
    print(f"MIDI input: {midi.port} ({midi.api}); tempo from {clock.source}")
    if args.learn:
        learned = midi.learn(args.learn)
        print(f"move a knob to bind it to {args.learn} ...")
        learned.add_done_callback(lambda f: f.cancelled() or print(f"learned: {f.result().to_dict()}"))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.seconds is not None:
        loop.call_later(args.seconds, stop.set)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 4.0)
            except TimeoutError:
                pass
            st = midi.status()
            blend = ", ".join(f"{p[:24]}={w:.2f}" for p, w in inst.prompts().items())
            print(
                f"bpm {inst.bpm():6.2f} ({clock.source})  cfg {inst.cfg():.2f}  [{blend}]  got {st['received']}"
            )
    finally:
        midi.close()
        inst.stop()
        if args.save:
            args.save.write_text(json.dumps(midi.to_dict(), indent=2) + "\n")
            print(f"mappings written to {args.save}")


if __name__ == "__main__":
    main()
