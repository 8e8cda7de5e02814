"""TidalCycles driving the instrument through sc_bridge/BootTidal-lmdm.hs.

Default run (Python only): the exact packets Tidal sends with that boot file (an OSC bundle stamped with
the time the event is heard, holding /lmdm/play with Tidal's sorted key/value pairs: `_id_` s, cps f,
cycle f, delta f, orbit i, s s and our params) go to the real OSC server playing a real Instrument; each
change must land on the block heard at its timetag, without the server ever waiting for it.

Slow integration run: real ghci + Tidal boot the snippet and play `d1 $ prompt "<dub acid>" # cfg "<2 4>"`;
each cycle's prompt must reach the instrument on the block heard at that cycle's timetag.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from osc_harness import HeardClock, free_udp_port
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from waiting import wait_until

from lmdm_live.live.replay import read_log
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

ROOT = Path(__file__).resolve().parents[2]
BOOT = ROOT / "sc_bridge" / "BootTidal-lmdm.hs"
WINDOW = LMDMConfig(mode="causal", context_frames=16, block_frames=8)  # 186 ms blocks


# --- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    """What `played` (conftest.py) plays behind the OSC server."""
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)


def on_time(clock: HeardClock, block: int, when: float) -> bool:
    """Whether `block`, where a change was applied, is the one playing at `when` (time.monotonic()).

    Slack: one block either way (the engine decides from its estimate, made a block ahead), plus whatever
    silence underruns inserted (a loaded machine; none when it keeps up), plus the clock's polling."""
    start = clock.heard_at(block)
    block_s = clock.engine.stream.model.block_seconds
    slack = block_s + clock.underrun_s + 0.05
    return -slack <= when - start < block_s + slack


def tidal_event(cycle: float, cps: float, **params) -> bytes:
    """`/lmdm/play` as Tidal 1.7 sends it: every key/value pair sorted by key, floats as f, ints as i,
    strings as s, and `_id_` (the pattern's id) as a string."""
    pairs = {"_id_": "1", "cps": float(cps), "cycle": float(cycle), "delta": 1.0 / cps, **params}
    b = OscMessageBuilder("/lmdm/play")
    for key in sorted(pairs):
        value = pairs[key]
        b.add_arg(key, "s")
        tag = "s" if isinstance(value, str) else "i" if isinstance(value, int) else "f"
        b.add_arg(value, tag)
    return b.build().dgram


def bundle(timetag_system: float, *messages: bytes) -> bytes:
    """A bundle stamped with a system (time.time()) instant, as Tidal's `Pre BundleStamp` does."""
    bb = OscBundleBuilder(timetag_system)
    for m in messages:
        bb.add_content(OscMessage(m))
    return bb.build().dgram


def params_events(log: Path) -> list[dict]:
    return [e for e in read_log(log) if e["type"] == "params"]


# --- (a) Tidal's packets, sent from Python ----------------------------------------------------------------


def test_tidal_bundles_land_on_their_cycles(played, tmp_path):
    inst, ctl, clock = played
    cps = 1.0  # one cycle a second
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.bind(("127.0.0.1", 0))
    to = ("127.0.0.1", ctl.port)
    inst.wait_blocks(2)
    try:
        # cycles 1 and 2, both sent now, 1.2 s and 2.2 s ahead (Tidal sends ~0.3 s ahead; the server must
        # not care how far): s and orbit are SuperDirt's and ignored
        sys_now, mono_now = time.time(), time.monotonic()
        first = tidal_event(1, cps, prompt="dub", cfg=2.0, steps=3, s="lmdm", orbit=0)
        second = tidal_event(2, cps, prompt="acid", cfg=4.0, steps=3, s="lmdm", orbit=0)
        due = {"dub": mono_now + 1.2, "acid": mono_now + 2.2}
        sock.sendto(bundle(sys_now + 1.2, first), to)
        sock.sendto(bundle(sys_now + 2.2, second), to)
        # the server answers at once while both wait for their time (it never sleeps until a timetag)
        t0 = time.monotonic()
        sock.sendto(OscMessageBuilder("/lmdm/status").build().dgram, to)
        reply = OscMessage(sock.recvfrom(65536)[0])
        answered_s = time.monotonic() - t0
        assert reply.address == "/lmdm/status" and answered_s < 1.0, answered_s
        status = dict(zip(reply.params[::2], reply.params[1::2]))
        assert status["bpm"] == 240.0  # cps 1 = 4 beats a second

        # a bad value in a Tidal event is answered and changes nothing, not even the good keys beside it
        sock.sendto(bundle(time.time() + 0.5, tidal_event(3, cps, prompt="jungle", cfg="loud")), to)
        err = OscMessage(sock.recvfrom(65536)[0])
        assert err.address == "/lmdm/error" and err.params[0] == "/lmdm/play" and "cfg" in err.params[1]

        wait_until(lambda: inst.stream.params.dominant == "acid", 5.0, "cycle 2's prompt")
        clock.wait_heard()
    finally:
        sock.close()
    inst.stop()
    applied = {e["value"]["prompts"][0][0]: e for e in params_events(tmp_path / "ev.jsonl")}
    applied.pop("", None)  # cps sets the tempo, which re-submits the starting (empty) prompt with the new bpm
    assert set(applied) == {"dub", "acid"}  # "jungle" never played
    for prompt, when in due.items():
        block = applied[prompt]["block"]
        assert on_time(clock, block, when), (prompt, block, clock.heard_at(block) - when)
    assert (
        applied["dub"]["value"]["sampler"]["cfg"] == 2.0 and applied["acid"]["value"]["sampler"]["cfg"] == 4.0
    )
    assert applied["acid"]["value"]["sampler"]["steps"] == 3 and ctl.errors == 1


def test_past_or_immediate_timetags_apply_at_the_next_block(played, tmp_path):
    """A late bundle (the network or a busy machine held it up) still plays, at once; so does a message
    without a bundle (Tidal's `Live` schedule)."""
    inst, ctl, _ = played
    to = ("127.0.0.1", ctl.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        inst.wait_blocks(2)
        late_block = inst.stream.block_index
        sock.sendto(bundle(time.time() - 0.5, tidal_event(7, 0.5625, prompt="late", cfg=1.5)), to)
        wait_until(lambda: inst.stream.params.dominant == "late", 3.0, "the late event")
        sock.sendto(tidal_event(8, 0.5625, prompt="live", steps=4), to)
        wait_until(lambda: inst.stream.params.dominant == "live", 3.0, "the plain message")
    inst.stop()
    applied = {e["value"]["prompts"][0][0]: e["block"] for e in params_events(tmp_path / "ev.jsonl")}
    assert applied["late"] <= late_block + 2, (applied, late_block)
    assert inst.bpm() == pytest.approx(135.0) and inst.cfg() == 1.5 and inst.steps() == 4 and ctl.errors == 0


# --- (b) real Tidal ------------------------------------------------------------------------------------------


def tidal_ghci() -> str:
    """ghci that can import Tidal; a clear failure naming the install command otherwise."""
    ghci = shutil.which("ghci")
    probe = ghci and subprocess.run(
        [ghci, "-ignore-dot-ghci", "-e", "import Sound.Tidal.Context"], capture_output=True, timeout=60
    )
    if not probe or probe.returncode != 0:
        pytest.fail(
            "ghci with Tidal is not installed (packages ghc, libghc-tidal-dev). Install them with "
            "`bash scripts/setup.sh --with-tidal`, then run `bash scripts/test.sh -m slow`."
        )
    return ghci


@dataclass
class Seen:
    """One /lmdm/play packet as it passed the tee: its cycle, prompt, and its timetag (time.monotonic())."""

    cycle: float
    prompt: str
    cfg: float
    cps: float
    ahead_s: float
    when: float


class Tee:
    """A UDP relay between Tidal and the OSC server that notes each event as it passes."""

    def __init__(self, to_port: int) -> None:
        self.to = ("127.0.0.1", to_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            sys_now, mono_now = time.time(), time.monotonic()
            if OscBundle.dgram_is_bundle(data):
                b = OscBundle(data)
                for m in b:
                    if m.address == "/lmdm/play":
                        kv = dict(zip(m.params[::2], m.params[1::2]))
                        ahead = b.timestamp - sys_now
                        self.seen.append(
                            Seen(
                                kv["cycle"],
                                kv["prompt"],
                                kv.get("cfg", 0.0),
                                kv["cps"],
                                ahead,
                                mono_now + ahead,
                            )
                        )
            out.sendto(data, self.to)
        out.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.mark.slow
@pytest.mark.integration
def test_real_tidal_plays_prompts_on_their_cycles(played, tmp_path):
    ghci = tidal_ghci()
    inst, ctl, clock = played
    tee = Tee(ctl.port)

    # the boot file as shipped, but: its own tempo port and no control port (never meet another Tidal on
    # this machine), and a latency long enough that "on time" and "on arrival" are blocks apart
    boot = BOOT.read_text()
    for old, new in (
        (
            "let tidalConfig = defaultConfig\n",
            f"let tidalConfig = defaultConfig {{cCtrlListen = False, cTempoPort = {free_udp_port()}}}\n",
        ),
        ("let lmdmLatency = 0.4 :: Double\n", "let lmdmLatency = 1.0 :: Double\n"),
    ):
        assert boot.count(old) == 1, old
        boot = boot.replace(old, new)
    session = boot + "\n".join(
        [
            "import Control.Concurrent (threadDelay)",
            "setcps 1",
            "threadDelay 200000",
            'd1 $ prompt "<dub acid>" # cfg "<2 4>"',
            "threadDelay 4500000",
            "hush",
            'putStrLn "TIDAL DONE"',
            ":quit",
            "",
        ]
    )
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [ghci, "-ignore-dot-ghci"],
            input=session,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LMDM_PORT": str(tee.port), "LMDM_HOST": "127.0.0.1"},
            cwd=tmp_path,
        )
        wall = time.monotonic() - t0
        time.sleep(1.2)  # the last event, stamped a second ahead, reaches the stream
        clock.wait_heard()
    finally:
        tee.close()
    print(f"ghci session: {wall:.1f} s, {len(tee.seen)} events")
    assert proc.returncode == 0 and "TIDAL DONE" in proc.stdout, proc.stdout + proc.stderr
    assert "error" not in proc.stdout.lower(), proc.stdout

    seen = [s for s in tee.seen if s.cps == 1.0]
    assert len(seen) >= 3, tee.seen
    for s in seen:  # the pattern's semantics: even cycles dub/2, odd cycles acid/4, on whole cycles
        assert s.cycle == int(s.cycle), s
        assert (s.prompt, s.cfg) == (("dub", 2.0) if int(s.cycle) % 2 == 0 else ("acid", 4.0)), s
        # stamped about the boot file's latency ahead (less when a loaded machine holds Tidal up)
        assert 0.2 < s.ahead_s < 1.3, s
    assert [b.cycle - a.cycle for a, b in zip(seen, seen[1:])] == [1.0] * (len(seen) - 1)

    inst.stop()
    assert inst.bpm() == 240.0  # setcps 1 arrived with the events' cps
    applied = params_events(tmp_path / "ev.jsonl")
    changes = [(e["value"]["prompts"][0][0], e["block"]) for e in applied]
    # each event changed the prompt on the block heard at its timetag
    for s in seen:
        blocks = [b for p, b in changes if p == s.prompt and on_time(clock, b, s.when)]
        assert blocks, (s, [(p, b, round(clock.heard_at(b) - s.when, 3)) for p, b in changes])
    assert ctl.errors == 0, ctl.last_error
