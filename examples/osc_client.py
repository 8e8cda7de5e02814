"""Play a running `lmdm-live` over OSC with python-osc: prompts, a guidance sweep on the beat, a change on
the bar, a timestamped bundle, Tidal-style /lmdm/play events and a fade, then the instrument's status.

    lmdm-live                                   # in one terminal: plays, and listens on 127.0.0.1:57140
    python examples/osc_client.py               # in another: about 40 s of changes
    python examples/osc_client.py --host 192.168.1.20 --ahead 0.5 --bars 2

Replies (/lmdm/status, /lmdm/error) come back to this script's own socket. One message is wrong on
purpose, to show the /lmdm/error the instrument answers with. See docs/osc.md for the address space.
"""

from __future__ import annotations

import argparse
import sys
import time

from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

DUB = "dub techno, deep filtered chord stabs with tape delay echoes, muffled kick, 122 BPM"
CHOIR = "shimmering choir, long reverb tail"
ACID = "acid house, squelchy TB-303 bassline with resonant filter sweeps, 909 drums"


class Lmdm:
    """A few lines around python-osc's client: send now, send a bundle heard later, read the replies."""

    def __init__(self, host: str, port: int) -> None:
        self.client = SimpleUDPClient(host, port)
        self.errors: list[tuple[str, str]] = []

    def send(self, address: str, *args) -> None:
        self.client.send_message(address, list(args))

    def bundle(self, ahead: float, *messages: tuple) -> None:
        """Messages heard together `ahead` seconds from now (the bundle's timetag); the instrument never
        waits for it, it schedules the change for the block heard at that time."""
        b = OscBundleBuilder(time.time() + ahead)
        for address, *args in messages:
            m = OscMessageBuilder(address)
            for a in args:
                m.add_arg(a)
            b.add_content(m.build())
        self.client.send(b.build())

    def listen(self, seconds: float, until: str | None = None) -> OscMessage | None:
        """Read replies for `seconds` (errors are printed and kept in self.errors); return early with the
        first reply to address `until`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            data = self.client.receive(left)
            if not data:
                continue
            m = OscMessage(data)
            if m.address == "/lmdm/error":
                address, reason = m.params
                self.errors.append((address, reason))
                print(f"  /lmdm/error {address}: {reason}")
            if m.address == until:
                return m
        return None

    def status(self, timeout: float = 2.0) -> dict | None:
        self.send("/lmdm/status")
        m = self.listen(timeout, until="/lmdm/status")
        return dict(zip(m.params[::2], m.params[1::2])) if m is not None else None


def show(status: dict) -> None:
    keys = (
        "prompt",
        "cfg",
        "cfg_pp",
        "steps",
        "gain",
        "bpm",
        "x_realtime",
        "underruns",
        "latency_ms",
        "blocks",
    )
    shown = (f"{k}={status[k]:.4g}" if isinstance(status[k], float) else f"{k}={status[k]!r}" for k in keys)
    print("  " + ", ".join(shown))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="where lmdm-live listens (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=57140, help="its OSC port (default 57140)")
    ap.add_argument(
        "--ahead", type=float, default=0.5, help="how far ahead timestamped bundles are sent, in seconds"
    )
    ap.add_argument("--bars", type=float, default=1.0, help="bars to wait between steps (0: no waiting)")
    args = ap.parse_args()
    osc = Lmdm(args.host, args.port)

    status = osc.status()
    if status is None:
        print(f"no reply from {args.host}:{args.port}; is `lmdm-live` running there?", file=sys.stderr)
        return 1
    print(f"connected to {args.host}:{args.port}")
    show(status)
    bpm = float(status["bpm"])
    beat = 60.0 / bpm

    def wait(bars: float) -> None:
        osc.listen(max(bars * args.bars * 4 * beat, 0.05))  # waiting doubles as listening for errors

    print("prompt, now")
    osc.send("/lmdm/prompt", DUB)
    wait(2)

    print("a choir under it, from the next bar")
    osc.send("/lmdm/prompts", DUB, 1.0, CHOIR, 0.3, "@bar")
    wait(2)

    print("guidance up, one step a beat")
    for scale in (1.5, 2.5, 3.5, 4.5):
        osc.send("/lmdm/cfg", scale, "@beat")
        wait(0.25)

    print(f"acid with CFG++, heard together {args.ahead} s from now")
    osc.bundle(args.ahead, ("/lmdm/prompt", ACID), ("/lmdm/cfg_pp", 0.8))
    wait(2)

    print("Tidal-style events: four cycles alternating acid and dub, each stamped with its time")
    cps = bpm / 240.0  # Tidal: 4 beats a cycle
    for cycle in range(4):
        prompt, cfg = (ACID, 3.0) if cycle % 2 == 0 else (DUB, 1.5)
        pairs = ("prompt", prompt, "cfg", cfg, "cps", cps, "cycle", float(cycle), "delta", 1 / cps)
        osc.bundle(args.ahead, ("/lmdm/play", *pairs))
        wait(1)

    print("a mistake on purpose (cfg is 0..20):")
    osc.send("/lmdm/cfg", 99.0)
    osc.listen(0.5)

    print("fade down and back up, a step a beat")
    for g in (0.8, 0.6, 0.4, 0.6, 0.8, 1.0):
        osc.send("/lmdm/gain", g)
        wait(0.25)

    print("back to plain guidance on the bar")
    osc.send("/lmdm/cfg", 1.0, "@bar")
    wait(1)

    status = osc.status()
    if status is None:
        print("no status reply at the end", file=sys.stderr)
        return 1
    show(status)
    unexpected = [e for e in osc.errors if e[0] != "/lmdm/cfg" or "99" not in e[1]]
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
