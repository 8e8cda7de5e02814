"""A separate JACK client in its own process: plays a .npy signal out of its ports (for the input tests).

    python tests/support/jack_play.py NAME SIGNAL.npy [DEST ...]

SIGNAL.npy holds (frames, channels) float32; port out_i plays channel i and is connected to DEST i when
given. Prints "ready" once its ports exist (and are connected), starts playing at the next period after a
line arrives on stdin, and after the signal and a short silence writes SIGNAL.npy.json with the JACK frame
time of its first played frame ("first"), its xrun count, the frames it skipped because it missed
periods, and the rate, then exits. Sample j of the signal is played at JACK frame time first + j.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import jack
import numpy as np

TAIL_S = 0.2  # silence after the signal, so the listener's last periods are known to be complete


def main() -> None:
    name, path, dests = sys.argv[1], sys.argv[2], sys.argv[3:]
    signal = np.ascontiguousarray(np.load(path), dtype=np.float32)
    client = jack.Client(name, no_start_server=True, servername=os.environ.get("JACK_DEFAULT_SERVER"))
    ports = [client.outports.register(f"out_{i + 1}") for i in range(signal.shape[1])]
    tail = int(TAIL_S * client.samplerate)
    state = {"go": False, "pos": 0, "first": None, "xruns": 0, "skipped": 0}
    done = threading.Event()

    def process(frames: int) -> None:
        if not state["go"] or state["pos"] >= len(signal) + tail:
            for p in ports:
                p.get_array().fill(0.0)
            return
        t = client.last_frame_time
        if state["first"] is None:
            state["first"] = t
        # Tied to JACK's clock: a period this client missed skips its part of the signal, never shifts it.
        pos = (t - state["first"]) & 0xFFFFFFFF
        state["skipped"] += pos - state["pos"]
        n = max(0, min(frames, len(signal) - pos))
        for i, p in enumerate(ports):
            buf = p.get_array()
            buf[:n] = signal[pos : pos + n, i]
            buf[n:] = 0.0
        state["pos"] = pos + frames
        if state["pos"] >= len(signal) + tail:
            done.set()

    def xrun(_usecs: float) -> None:
        if state["go"]:
            state["xruns"] += 1

    client.set_process_callback(process)
    client.set_xrun_callback(xrun)
    client.activate()
    for src, dst in zip(ports, dests):
        client.connect(src, dst)
    print("ready", flush=True)
    sys.stdin.readline()
    state["go"] = True
    finished = done.wait(len(signal) / client.samplerate * 4 + 10)
    rate = client.samplerate
    client.deactivate()
    client.close()
    with open(path + ".json", "w") as f:
        json.dump({k: state[k] for k in ("first", "xruns", "skipped")} | {"rate": rate}, f)
    sys.exit(0 if finished else 1)


if __name__ == "__main__":
    main()
