"""Measure the remote path on loopback (docs/scale.md's table): a laptop JACK server (dummy driver) and a
host server joined by netJACK2, `lmdm-live serve` on the host, a RemoteInstrument here.

    .venv/bin/python scripts/remote_latency.py [--latency normal|low] [--trials 6] [--out FILE.json]

Prints (and writes, with --out) JSON: the reported worst case split into buffer, network driver, block and
compute; netJACK2's measured round trip; and control -> heard for OSC gain changes, measured where the
host's audio enters the laptop's graph.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from osc_harness import OSCServerThread  # noqa: E402
from remote_rig import RATE, SECRET, Host, LaptopServer, Meter, RoundTrip, connect_on  # noqa: E402
from waiting import wait_until  # noqa: E402

from lmdm_live.audio.netjack import NetLink  # noqa: E402
from lmdm_live.control.osc_wire import encode  # noqa: E402
from lmdm_live.control.remote import RemoteInstrument  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", choices=("normal", "low"), default="normal")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    laptop = LaptopServer()
    host = Host(laptop, extra=("--latency", args.latency))
    try:
        inst = RemoteInstrument("127.0.0.1", host.port, secret=SECRET.encode(), quiet=True)
        inst.net = inst.engine.net = NetLink(host.net_name, server_name=laptop.name, capture=False).start()
        osc = OSCServerThread(inst)
        meter = Meter(laptop.name, [f"{host.net_name}:from_slave_1", f"{host.net_name}:from_slave_2"])
        inst.gain(1.0)
        wait_until(lambda: meter.n > 400 and meter.levels[meter.n - 400 : meter.n].min() > 1e-3, 60, "sound")
        time.sleep(2)
        reported = dict(inst.latency())
        heard = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k in range(args.trials):
                level = float(np.median(meter.levels[meter.n - 200 : meter.n]))
                sent = meter.now()
                s.sendto(encode("/lmdm/gain", [("f", 0.0)]), ("127.0.0.1", osc.port))
                wait_until(
                    lambda t=sent, v=level: meter.first_below(t, 0.5 * v) is not None, 20, "the change"
                )
                heard.append(((meter.first_below(sent, 0.5 * level) - sent) & 0xFFFFFFFF) / RATE * 1e3)
                s.sendto(encode("/lmdm/gain", [("f", 1.0)]), ("127.0.0.1", osc.port))
                wait_until(
                    lambda v=level: meter.levels[meter.n - 100 : meter.n].min() > 0.5 * v, 20, "sound again"
                )
                time.sleep(0.5 + 0.37 * k)  # land the next change at another point of the block
        connect_on(host.jack, "system:capture_1", "system:playback_1")
        inst.gain(0.0)
        wait_until(lambda: meter.levels[meter.n - 100 : meter.n].max() < 1e-6, 20, "quiet")
        loop = RoundTrip(laptop.name, f"{host.net_name}:to_slave_1", f"{host.net_name}:from_slave_1")
        loop.fire()
        wait_until(lambda: loop.frames is not None, 10, "the impulse back")
        status = inst.status()
        result = {
            "latency_preset": args.latency,
            "jack": {"rate": RATE, "period": 256, "net_latency_periods": 2},
            "reported_ms": reported,
            "netjack_round_trip_ms": round(loop.frames / RATE * 1e3, 2),
            "osc_to_heard_ms": {"median": round(statistics.median(heard), 1), "max": round(max(heard), 1)},
            "trials": [round(h, 1) for h in heard],
            "host": {k: status.get(k) for k in ("ms_per_block", "x_realtime", "underruns", "rtt_ms")},
        }
        loop.close()
        meter.close()
        osc.close()
        inst.stop()
    finally:
        host.stop()
        laptop.close()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
