"""The SuperCollider class `LMDM` (sc_bridge/) run by a real, headless sclang.

sclang compiles the class from the repository (a generated sclang_conf.yaml puts sc_bridge/classes on its
include path) and plays a real Instrument through the real OSC server; Python then checks what the
instrument did and what sclang printed (status replies, posted errors). A second run checks every method's
exact OSC message against a bare UDP socket.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from osc_harness import OSCServerThread, free_udp_port
from waiting import wait_until

from lmdm_live import Instrument
from lmdm_live.live.replay import read_log
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

ROOT = Path(__file__).resolve().parents[2]
SC_BRIDGE = ROOT / "sc_bridge"
WINDOW = LMDMConfig(mode="causal", context_frames=16, block_frames=8)  # 186 ms blocks
SCLANG_TIMEOUT_S = 60.0

pytestmark = pytest.mark.integration


# --- helpers ------------------------------------------------------------------------------------------------


def run_sclang(body: str, tmp_path: Path, watchdog_s: float = 20.0, env: dict | None = None):
    """Run `body` as an sclang script with the LMDM class compiled in; it must end with `0.exit`.

    A watchdog inside the script exits with code 3 if it hangs (e.g. a reply that never comes)."""
    sclang = shutil.which("sclang")
    if sclang is None:
        pytest.fail(
            "sclang is not installed (package supercollider-language). Run the tests through "
            "`bash scripts/test.sh`, which installs it."
        )
    conf = tmp_path / "sclang_conf.yaml"
    conf.write_text(
        f"includePaths:\n    - {SC_BRIDGE / 'classes'}\nexcludePaths: []\npostInlineWarnings: true\n"
    )
    # the body runs as a file of its own, so that even a syntax error in it leaves the watchdog running
    (tmp_path / "body.scd").write_text(body)
    script = tmp_path / "script.scd"
    script.write_text(
        f'SystemClock.sched({watchdog_s}, {{ "WATCHDOG: the script did not finish".postln; 3.exit; nil }});\n'
        f'thisProcess.interpreter.executeFile("{tmp_path / "body.scd"}");\n'
    )
    full_env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",  # no display
        "QTWEBENGINE_DISABLE_SANDBOX": "1",  # root in a container
        **(env or {}),
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        [sclang, "-u", str(free_udp_port()), "-l", str(conf), str(script)],
        capture_output=True,
        text=True,
        timeout=SCLANG_TIMEOUT_S,
        env=full_env,
        cwd=tmp_path,
    )
    proc.wall_s = time.monotonic() - t0
    assert "ERROR" not in proc.stdout.split("compile done")[0], proc.stdout  # the class compiles cleanly
    return proc


@pytest.fixture(scope="module")
def model():
    """What `played` (conftest.py) plays behind the OSC server."""
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)


def sclang_status(stdout: str) -> dict[str, str]:
    """`STATUS key=value` lines the script printed from its status callback."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("STATUS "):
            key, _, value = line[len("STATUS ") :].partition("=")
            out[key] = value
    return out


def typetags(dgram: bytes) -> str:
    """The type tag string of one OSC message ("," when it has none)."""
    from pythonosc.parsing import osc_types

    _, i = osc_types.get_string(dgram, 0)
    return osc_types.get_string(dgram, i)[0] if i < len(dgram) else ","


# --- the class against the real instrument ------------------------------------------------------------------


def test_lmdm_class_plays_the_instrument_and_gets_replies(played, tmp_path):
    inst, ctl, clock = played
    take = tmp_path / "take.wav"
    body = f"""
l = LMDM("127.0.0.1", {ctl.port});
l.record("{take.name}");          // under the instrument's recordings directory
l.prompts(["acid", 1, "strings", 0.5]);
l.cfg(3); l.steps(3); l.gain(0.5);
l.seed(7, latency: 2.0);          // a bundle: heard two seconds from now
l.steps(4, \\bar);                 // "@bar": on the next bar line
l.cfg(-1);                        // out of range: /lmdm/error comes back and is posted
l.status {{ |st|
    st.keysValuesDo {{ |k, v| "STATUS %=%".format(k, v).postln }};
    "STATUS prompt_class=%".format(st[\\prompt].class).postln;
    // a few blocks into the take, stop it and quit
    SystemClock.sched(0.6, {{ l.recordStop; 0.exit; nil }});
}};
"""
    sent = time.monotonic()
    proc = run_sclang(body, tmp_path)
    print(f"sclang run: {proc.wall_s:.2f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # the status reply reached sclang as an Event with the instrument's values
    st = sclang_status(proc.stdout)
    assert st["cfg"] == "3.0" and st["steps"] == "4" and st["gain"] == "0.5" and st["seed"] == "7", st
    assert st["prompt"] == "acid" and st["prompt_class"] == "String", st
    # the figures arrive as numbers of the right kind (their values depend on the machine's load)
    assert int(st["blocks"]) > 0 and int(st["underruns"]) >= 0 and int(st["faults"]) == 0, st
    assert float(st["x_realtime"]) > 0 and float(st["latency_ms"]) > 0 and float(st["bpm"]) == 120.0, st

    # the bad value was answered and posted, and changed nothing
    assert "LMDM error: /lmdm/cfg: cfg must be in 0..20, got -1" in proc.stdout, proc.stdout
    assert ctl.errors == 1 and inst.cfg() == 3.0

    # the changes reached the stream: wait for the timed seed and the bar-quantised steps to be applied
    log = tmp_path / "ev.jsonl"
    block_s = inst.model.block_seconds
    bar_s = 4 * 60.0 / inst.bpm()
    wait_until(
        lambda: inst.stream.seed == 7 and inst.stream.params.sampler.steps == 4,
        max(0.0, sent + SCLANG_TIMEOUT_S - time.monotonic()) + 2 * bar_s,
        "the timed seed and the @bar steps change",
    )
    assert inst.stream.params.prompts == (("acid", 1.0), ("strings", 0.5))
    assert inst.stream.params.sampler.cfg == 3.0 and inst.gain() == 0.5
    clock.wait_heard()
    inst.stop()
    events = read_log(log)
    params = [e for e in events if e["type"] == "params"]
    first = params[0]["block"]  # the immediate changes, applied together at the next block
    seed_block = next(e["block"] for e in events if e["type"] == "seed")
    steps4 = next(e["block"] for e in params if e["value"]["sampler"]["steps"] == 4)
    # heard 2 s after sending; the immediate changes were heard once the ring had played, and the engine
    # keeps at most its headroom, its compute lead and one block in the ring. Applied on arrival, the seed
    # would be heard with them, within a block.
    eng = inst.engine
    ring_max_s = eng.headroom_ms / 1e3 + 1.25 * max(eng.stats.block_ms) / 1e3 + block_s
    gap = clock.heard_at(seed_block) - clock.heard_at(first)
    low = 2.0 - ring_max_s - block_s - clock.underrun_s - 0.05
    assert max(low, block_s) < gap < 2.0 + 2 * block_s + clock.underrun_s, (first, seed_block, gap, low)
    # @bar: the first block starting on or after a bar line of the instrument's grid
    offset = (steps4 * block_s) % bar_s
    assert steps4 >= first and offset < block_s + 1e-6, (steps4, offset)

    # /lmdm/record and /lmdm/record/stop wrote a closed, non-empty WAV file
    info = sf.info(str(take))
    assert info.frames > 0 and info.samplerate == inst.engine.out_rate


# --- every method's message, byte-exact enough to matter -----------------------------------------------------


def test_every_method_sends_its_address_with_typed_arguments(tmp_path):
    from pythonosc.osc_bundle import OscBundle
    from pythonosc.osc_message import OscMessage

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port = sock.getsockname()[1]
    got: list[tuple[str, list, str, float | None]] = []  # address, args, type tags, timetag - arrival
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            now = time.time()
            if OscBundle.dgram_is_bundle(data):
                b = OscBundle(data)
                for m in b:
                    got.append((m.address, m.params, typetags(m.dgram), b.timestamp - now))
            else:
                m = OscMessage(data)
                got.append((m.address, m.params, typetags(data), None))

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    body = f"""
l = LMDM("127.0.0.1", {port});
l.prompt("dub techno"); l.prompt(\\acid, \\bar);
l.prompts(["acid", 1, "strings", 0.5], \\beat); l.prompts((choir: 0.25));
l.cfg(3); l.cfg(2.5, \\block); l.cfgpp(0.5); l.cfgpp(\\off); l.tempoGuidance(20); l.sketchGuidance(12); l.steps(4.0); l.steps(2.5); l.sampler(\\pingpong);
l.seed(7); l.drop; l.drop(4, \\bar); l.gain(1); l.mute(\\bar); l.unmute; l.hush; l.reset(\\beat);
l.bpm(124); l.patch("dub"); l.record("take.wav"); l.recordStop;
l.play([\\prompt, \\acid, \\cfg, 3, \\steps, 4.0, \\cps, 1]);
l.gain(0.5, latency: 0.5);
l.bundle(0.8) {{ |l| l.prompt("jungle"); l.cfg(5) }};
l.cfg(nil); l.prompt(nil);       // nothing to send: posted here, nothing sent
l.status({{ }}, 0.2);
q = thisProcess.interpreter.executeFile("{SC_BRIDGE / "LMDM.quark"}");
"QUARK name=% version=% author=%".format(q[\\name], q[\\version], q[\\author].notNil).postln;
"SCHELP parsed=%".format(SCDoc.parseFileFull("{SC_BRIDGE / "HelpSource/Classes/LMDM.schelp"}").notNil).postln;
SystemClock.sched(0.5, {{ 0.exit; nil }});  // nil: a number would reschedule it
"""
    try:
        proc = run_sclang(body, tmp_path)
        time.sleep(0.2)
    finally:
        stop.set()
        t.join(2)
        sock.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no /lmdm/status reply" in proc.stdout  # nothing answered, the timeout said so
    assert "LMDM error: /lmdm/cfg: a value is missing (got nil)" in proc.stdout, proc.stdout
    assert "LMDM error: /lmdm/prompt: a value is missing (got nil)" in proc.stdout, proc.stdout
    # the quark file is what Quarks reads, and the help file parses
    assert "QUARK name=LMDM version=0.1.0 author=true" in proc.stdout, proc.stdout
    assert "SCHELP parsed=true" in proc.stdout and "ERROR" not in proc.stdout, proc.stdout
    plain = [(a, p, tags) for a, p, tags, tt in got if tt is None]
    assert plain == [
        ("/lmdm/prompt", ["dub techno"], ",s"),
        ("/lmdm/prompt", ["acid", "@bar"], ",ss"),
        ("/lmdm/prompts", ["acid", 1.0, "strings", 0.5, "@beat"], ",sfsfs"),
        ("/lmdm/prompts", ["choir", 0.25], ",sf"),
        ("/lmdm/cfg", [3.0], ",f"),
        ("/lmdm/cfg", [2.5, "@block"], ",fs"),
        ("/lmdm/cfg_pp", [0.5], ",f"),
        ("/lmdm/cfg_pp", ["off"], ",s"),
        ("/lmdm/tempo_guidance", [20.0], ",f"),
        ("/lmdm/sketch_guidance", [12.0], ",f"),
        ("/lmdm/steps", [4], ",i"),
        ("/lmdm/steps", [2.5], ",f"),  # not an integer: sent as is, for the instrument to refuse
        ("/lmdm/sampler", ["pingpong"], ",s"),
        ("/lmdm/seed", [7], ",i"),
        ("/lmdm/drop", [], ","),
        ("/lmdm/drop", [4, "@bar"], ",is"),
        ("/lmdm/gain", [1.0], ",f"),
        ("/lmdm/mute", ["@bar"], ",s"),
        ("/lmdm/unmute", [], ","),
        ("/lmdm/hush", [], ","),
        ("/lmdm/reset", ["@beat"], ",s"),
        ("/lmdm/bpm", [124.0], ",f"),
        ("/lmdm/patch", ["dub"], ",s"),
        ("/lmdm/record", ["take.wav"], ",s"),
        ("/lmdm/record/stop", [], ","),
        ("/lmdm/play", ["prompt", "acid", "cfg", 3.0, "steps", 4, "cps", 1.0], ",sssfsisf"),
        ("/lmdm/status", [], ","),
    ]
    timed = [(a, p, tt) for a, p, tags, tt in got if tt is not None]
    assert [(a, p) for a, p, _ in timed] == [
        ("/lmdm/gain", [0.5]),
        ("/lmdm/prompt", ["jungle"]),
        ("/lmdm/cfg", [5.0]),
    ]
    # timetags are `latency` ahead of sending (received a few ms later on a loaded machine)
    assert 0.3 < timed[0][2] <= 0.5 and 0.6 < timed[1][2] <= 0.8 and timed[1][2] == timed[2][2], timed


def test_help_file_documents_every_public_method():
    source = (SC_BRIDGE / "classes" / "LMDM.sc").read_text()
    methods = set(re.findall(r"^\t\*?(\w+) \{", source, flags=re.M))
    accessors = {
        name
        for decl in re.findall(r"^\t(?:class)?var (.*);", source, flags=re.M)
        for name in re.findall(r"<>?(\w+)", decl)
    }
    public = {
        m for m in methods | accessors if not m.startswith("pr") and m not in ("init", "initClass", "printOn")
    }
    help_text = (SC_BRIDGE / "HelpSource" / "Classes" / "LMDM.schelp").read_text()
    documented = set(re.findall(r"^METHOD:: (\w+)", help_text, flags=re.M))
    assert len(public) > 25 and public <= documented, sorted(public - documented)
    # the address space: every /lmdm/ address the class sends is named in its help
    for address in set(re.findall(r"'(/lmdm/[\w/]+)'", source)):
        assert address in help_text, address


# --- examples/lmdm_into_scsynth.scd: the instrument's JACK output processed by scsynth ------------------------


def jack_connections(port: str) -> list[str]:
    import jack

    probe = jack.Client("lmdm-sc-probe", no_start_server=True)
    try:
        return sorted(p.name for p in probe.get_all_connections(port))
    except jack.JackError:
        return []
    finally:
        probe.close()


@pytest.mark.slow
@pytest.mark.jack
def test_into_scsynth_example_routes_the_instrument_through_scsynth(jack_server, model, tmp_path):
    from lmdm_live.audio import JackBackend, JackRecorder

    if shutil.which("scsynth") is None:
        pytest.fail("scsynth is not installed (package supercollider-server); run `bash scripts/setup.sh`")
    rec = JackRecorder("lmdm-sc-rec", 2, (), max_seconds=30)  # scsynth's outputs connect to it
    player = JackBackend(client_name="lmdm-sc-play", channels=2, connect=True)  # also to system:playback
    inst = Instrument(model, backend=player, steps=2, headroom_ms=170, quiet=True)
    server = OSCServerThread(inst)
    ctl = server.ctl
    seen: dict[str, list[str]] = {}
    done = threading.Event()

    def watch() -> None:  # the example's connections: the last seen while scsynth ran
        while not done.wait(0.2):
            now = jack_connections("lmdm-sc-play:out_1")
            if any(p.startswith("SuperCollider:") for p in now):
                seen["out_1"] = now
                seen["rec"] = jack_connections("lmdm-sc-rec:in_1")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rec.start()
    try:
        assert jack_connections("lmdm-sc-play:out_1") == ["system:playback_1"]
        proc = run_sclang(
            (SC_BRIDGE / "examples" / "lmdm_into_scsynth.scd").read_text(),
            tmp_path,
            watchdog_s=45,
            env={
                "LMDM_JACK_CLIENT": "lmdm-sc-play",
                "LMDM_PORT": str(ctl.port),
                "LMDM_EXAMPLE_SECONDS": "3",
                "SC_JACK_DEFAULT_OUTPUTS": "lmdm-sc-rec:in_1,lmdm-sc-rec:in_2",
            },
        )
    finally:
        done.set()
        watcher.join(2)
        rec.stop()
        server.close()
        inst.stop()
    print(f"sclang + scsynth run: {proc.wall_s:.2f} s")
    assert proc.returncode == 0 and "server ready" in proc.stdout, proc.stdout + proc.stderr
    assert "lmdm_into_scsynth: lmdm-sc-play -> scsynth" in proc.stdout, proc.stdout
    # scsynth took the instrument's output; the direct path to the speakers was removed
    assert seen.get("out_1") == ["SuperCollider:in_1"], seen
    assert seen.get("rec") == ["SuperCollider:out_1"], seen
    # the example's LMDM object played the instrument
    assert inst.prompt() == "dub techno, 124 bpm" and inst.bpm() == 124.0 and ctl.errors == 0
    # sound came out of scsynth, and scsynth makes none of its own in that example: it was the instrument's
    audio = rec.audio
    assert audio.shape[0] > 2 * rec.sample_rate, audio.shape
    assert float(np.sqrt(np.mean(audio**2))) > 1e-3
