"""The laptop's side of a remote-generation test, in a process of its own (libjack joins a process to one
JACK server at a time, and the test process holds the tests' own server): a RemoteInstrument playing a
running `lmdm-live serve`, the host's audio through netJACK2 on the laptop's server, and what the test
asks to be measured. Prints one JSON line: the figures the test then judges.

    python tests/support/remote_laptop.py SCENARIO --server LAPTOP --port CONTROL --net-name NAME
        [--host-jack HOSTSERVER] [--udp NETPORT] [--relay]     SCENARIO: audio | osc | cut | cut-local
"""

from __future__ import annotations

import argparse
import json
import socket
import time

import numpy as np
from osc_harness import OSCServerThread
from remote_rig import RATE, SECRET, Meter, Relay, RoundTrip, connect_on
from waiting import wait_until

from lmdm_live.audio import JackBackend, JackRecorder
from lmdm_live.audio.netjack import NetLink
from lmdm_live.control.osc_wire import encode
from lmdm_live.control.remote import RemoteInstrument


def play_remote(args, port: int, targets: str, fallback=None) -> RemoteInstrument:
    inst = RemoteInstrument("127.0.0.1", port, secret=SECRET.encode(), fallback=fallback, quiet=True)
    ports = [f"{fallback.backend.client_name}:out_{i + 1}" for i in range(2)] if fallback else []
    inst.net = inst.engine.net = NetLink(
        args.net_name, targets=targets, fallback=ports, server_name=args.server, capture=False
    ).start()
    return inst.start()


def loud(rec: JackRecorder, seconds: float = 0.5) -> bool:
    n = rec.frames
    tail = rec.buffer[max(0, n - int(seconds * RATE)) : n]
    return n > 0 and float(np.sqrt(np.mean(tail**2))) > 1e-3


def heard(rec: JackRecorder, frames: int, timeout: float = 30.0) -> None:
    wait_until(lambda: rec.frames >= frames, timeout, f"{frames} frames recorded")


def audio(args) -> dict:
    """Record the host's audio as it arrives, then send an impulse round through the host's server."""
    rec = JackRecorder("lmdm-rt-rec", 2, max_seconds=30, server_name=args.server)
    rec.start()
    inst = play_remote(args, args.port, "lmdm-rt-rec:in_")
    try:
        wait_until(lambda: loud(rec, 0.2), 30, "the host's audio on the laptop")
        heard(rec, rec.frames + 3 * RATE)
        reported = inst.net.latency_ms()["netjack_ms"]
        inst.gain(0.0)  # quiet, then an impulse goes laptop -> host -> laptop
        wait_until(lambda: not loud(rec, 0.3), 20, "the host fading out")
        quiet_from = rec.frames
        connect_on(args.host_jack, "system:capture_1", "system:playback_1")
        loop = RoundTrip(args.server, f"{args.net_name}:to_slave_1", f"{args.net_name}:from_slave_1")
        loop.fire()
        wait_until(lambda: loop.frames is not None, 10, "the impulse coming back")
        round_trip = loop.frames
        loop.close()
    finally:
        inst.stop()
        rec.stop()
    np.save(args.out, rec.audio[:quiet_from])
    return {"round_trip": round_trip, "netjack_ms": reported}


def osc(args) -> dict:
    """An OSC change sent on the laptop, timed from the send to the cycle it is heard in."""
    sink = JackRecorder("lmdm-osc-sink", 2, max_seconds=1, server_name=args.server)  # the "speakers"
    inst = play_remote(args, args.port, "lmdm-osc-sink:in_")
    server = OSCServerThread(inst)
    meter = Meter(args.server, [f"{args.net_name}:from_slave_1", f"{args.net_name}:from_slave_2"])
    try:
        inst.gain(1.0)
        wait_until(lambda: meter.n > 200 and meter.levels[meter.n - 200 : meter.n].min() > 1e-3, 30, "sound")
        latency = dict(inst.latency())
        level = float(np.median(meter.levels[meter.n - 200 : meter.n]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            sent = meter.now()
            s.sendto(encode("/lmdm/gain", [("f", 0.0)]), ("127.0.0.1", server.port))
        wait_until(lambda: meter.first_below(sent, 0.5 * level) is not None, 20, "the gain change heard")
        heard_ms = ((meter.first_below(sent, 0.5 * level) - sent) & 0xFFFFFFFF) / RATE * 1e3
    finally:
        server.close()
        meter.close()
        inst.stop()
        sink.stop()
    return {"latency": latency, "heard_ms": heard_ms}


def host_prompt(inst: RemoteInstrument) -> str:
    inst.status()
    return inst.engine.host_state.get("params", {}).get("prompts", [[""]])[0][0]


def cut(args, fallback: bool) -> dict:
    """Cut the control link (a relay standing in for the network) and the audio link (netmanager unloaded
    from the laptop's server), change something meanwhile, and restore both."""
    relay = Relay(args.port)
    local = None
    if fallback:
        from lmdm_live import Instrument
        from lmdm_live.model.bundle import LMDMModel
        from lmdm_live.model.lmdm import LMDMConfig

        window = LMDMConfig(mode="causal", context_frames=16, block_frames=8)
        backend = JackBackend("lmdm-fallback", 2, connect=False, server_name=args.server)
        model = LMDMModel.preset("tiny", lmdm=window, seed=1)
        local = Instrument(model, backend=backend, steps=2, start=False, quiet=True, threads=1)
    rec = JackRecorder("lmdm-cut-rec", 2, max_seconds=60, server_name=args.server)
    rec.start()
    inst = play_remote(args, relay.port, "lmdm-cut-rec:in_", fallback=local)
    out: dict = {}
    try:
        inst.gain(1.0)
        wait_until(lambda: loud(rec, 1.0), 30, "the host's audio on the laptop")
        out["block_before"] = inst.status()["block_index"]

        relay.cut()
        unload = ["jack_unload", "netmanager", args.server]
        import subprocess

        subprocess.run(unload, check=True, capture_output=True, timeout=20)
        wait_until(lambda: not inst.link.up and not inst.net.up, 10, "the laptop noticing the cut")
        t = time.monotonic()
        held = f"held while the link was down ({'local' if fallback else 'none'})"
        inst.prompt(held)  # neither raises nor waits for the host
        st = inst.status()
        out["set_while_down_s"] = time.monotonic() - t
        out["down"] = {k: st[k] for k in ("link", "stale", "held_changes", "audio_link")}
        cut_at = rec.frames
        heard(rec, cut_at + 2 * RATE)
        outage = rec.buffer[cut_at + RATE // 2 : cut_at + 2 * RATE]
        out["outage_peak"] = float(np.abs(outage).max())
        out["outage_rms"] = float(np.sqrt(np.mean(outage**2)))

        relay.restore()
        init = f"-a 127.0.0.1 -p {args.udp}"
        subprocess.run(["jack_load", "-s", args.server, "netmanager", "-i", init], check=True, timeout=20)
        wait_until(lambda: inst.link.up and inst.net.up, 20, "the link coming back")
        wait_until(lambda: host_prompt(inst) == held, 10, "the held change arriving")
        back = rec.frames
        heard(rec, back + 2 * RATE)
        out["after_rms"] = float(np.sqrt(np.mean(rec.buffer[back + RATE : back + 2 * RATE] ** 2)))
        out["block_after"] = inst.status()["block_index"]
        out["drops"] = inst.link.drops
        out["host_prompt"] = host_prompt(inst) == held
    finally:
        inst.stop()
        rec.stop()
        relay.cut()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=("audio", "osc", "cut", "cut-local"))
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--net-name", required=True)
    ap.add_argument("--host-jack", default=None)
    ap.add_argument("--udp", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    run = {"audio": audio, "osc": osc, "cut": lambda a: cut(a, False), "cut-local": lambda a: cut(a, True)}
    print(json.dumps(run[args.scenario](args)), flush=True)


if __name__ == "__main__":
    main()
