"""A separate JACK client in its own process: records ports to a .npy file (for the play tests).

    python tests/support/jack_record.py NAME OUT.npy SECONDS SOURCE [SOURCE ...]

Prints "ready" once its ports are connected; records until SIGTERM/SIGINT or SECONDS, then writes the
recording and a JSON sidecar with the JACK frame time of its first recorded frame and its xrun count.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

import numpy as np

from lmdm_live.audio import JackRecorder


def main() -> None:
    name, out, seconds, sources = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    rec = JackRecorder(name, len(sources), sources, max_seconds=seconds)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    rec.start()
    print("ready", flush=True)
    done.wait(seconds)
    rec.stop()
    np.save(out, rec.audio)
    with open(out + ".json", "w") as f:
        json.dump({"first_frame_time": rec.first_frame_time, "xruns": rec.xruns, "rate": rec.sample_rate}, f)


if __name__ == "__main__":
    main()
