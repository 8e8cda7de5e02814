"""MIDI control over real JACK MIDI ports: a second client sends to the instrument's virtual input."""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lmdm_live import Instrument
from lmdm_live.audio import FileBackend
from lmdm_live.control.clock import Clock
from lmdm_live.control.midi import MidiControl
from lmdm_live.live.mappings import CCMapping, NoteMapping, program_map_from_dict
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

# --- the mapping records (no ports needed) --------------------------------------------------------------


def test_cc_mapping_curves_and_integer_params():
    lin = CCMapping.from_dict({"cc": 1, "param": "cfg", "lo": 1, "hi": 7})
    assert (lin.value(0), lin.value(127)) == (1.0, 7.0)
    assert lin.value(64) == pytest.approx(1 + 6 * 64 / 127)
    exp = CCMapping(2, "gain", 0.1, 2.0, "exp")
    assert exp.value(64) == pytest.approx(0.1 * 20 ** (64 / 127))  # equal ratios per step
    log = CCMapping(3, "cfg", 1.0, 7.0, "log")
    assert log.value(64) > lin.value(64) > exp.value(64)  # log rises first, exp last
    assert (log.value(0), log.value(127)) == pytest.approx((1.0, 7.0))
    steps = CCMapping(4, "steps", 1, 16)
    assert steps.value(64) == 9 and isinstance(steps.value(64), int)
    assert CCMapping(5, "gain", 1.0, 0.0).value(127) == 0.0  # an inverted knob is fine
    assert CCMapping(6, "gain", 0, 1).value(500) == 1.0  # clamped
    m = CCMapping.from_dict(
        {"cc": 7, "param": "weight:choir", "lo": 0, "hi": 1, "channel": 2, "curve": "lin"}
    )
    assert CCMapping.from_dict(m.to_dict()) == m


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"cc": 128, "param": "cfg", "lo": 1, "hi": 2}, "cc"),
        ({"cc": True, "param": "cfg", "lo": 1, "hi": 2}, "cc"),
        ({"cc": 1, "param": "volume", "lo": 1, "hi": 2}, "param"),
        ({"cc": 1, "param": "weight:", "lo": 0, "hi": 1}, "param"),
        ({"cc": 1, "param": "gain", "lo": 0, "hi": 9}, "hi"),
        ({"cc": 1, "param": "gain", "lo": float("nan"), "hi": 1}, "lo"),
        ({"cc": 1, "param": "gain", "lo": 1, "hi": 1}, "lo and hi"),
        ({"cc": 1, "param": "gain", "lo": 0, "hi": 1, "curve": "exp"}, "curve 'exp' needs lo and hi > 0"),
        ({"cc": 1, "param": "gain", "lo": 0.1, "hi": 1, "curve": "cubic"}, "curve"),
        ({"cc": 1, "param": "gain", "lo": 0, "hi": 1, "channel": 16}, "channel"),
        ({"cc": 1, "param": "gain", "lo": 0, "hi": 1, "knob": 3}, "knob"),
        ({"cc": 1, "param": "gain", "lo": 0}, "hi"),
    ],
)
def test_bad_cc_mappings_name_the_bad_key(bad, key):
    with pytest.raises(ValueError, match=key):
        CCMapping.from_dict(bad)


def test_note_and_program_maps_validate():
    assert NoteMapping.from_dict({"note": 60, "prompt": "choir"}) == NoteMapping(60, "choir", 1.0)
    for bad in (
        {"note": 200, "prompt": "x"},
        {"note": 60, "prompt": 3},
        {"note": 60, "prompt": "x", "weight": 0},
    ):
        with pytest.raises(ValueError):
            NoteMapping.from_dict(bad)
    assert program_map_from_dict({"3": "dub", 4: "acid"}) == {3: "dub", 4: "acid"}
    for bad in ({"x": "dub"}, {128: "dub"}, {1: ""}, ["dub"]):
        with pytest.raises(ValueError):
            program_map_from_dict(bad)


# --- live, through JACK ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=16, block_frames=8))


@pytest.fixture
def inst(model, tmp_path):
    """A playing instrument (paced like a sound card, written to a WAV file)."""
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, realtime=True)
    i = Instrument(model, backend=backend, steps=2, quiet=True, prompt="dub")
    yield i
    i.stop()


@pytest.fixture
def idle(model, tmp_path):
    """The same instrument, not started: for tests about its controls only (spares the shared CPU)."""
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, realtime=True)
    i = Instrument(model, backend=backend, steps=2, quiet=True, prompt="dub", start=False)
    yield i
    i.stop()


class Sender:
    """A MIDI controller connected to the instrument's input: tests/support/jack_midi_send.py, another JACK client in
    a process of its own, writing what it is sent through JACK's own MIDI path (python-rtmidi's JACK output
    drops the odd message when the machine is busy, which would test the sender, not us)."""

    def __init__(self, server: str, dest: str) -> None:
        name = f"lmdm-test-keys-{random.randrange(1 << 30)}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parents[1] / "support" / "jack_midi_send.py"),
                name,
                dest,
                server,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline().strip() if ready else "no answer within 30 s"
        if line != "ready":
            self.close()
            raise AssertionError(f"the MIDI sender did not start: {line}")
        self._lock = threading.Lock()  # the clock thread and the scenario both send

    def raw(self, data: bytes) -> None:
        with self._lock:
            self.proc.stdin.write(data.hex() + "\n")
            self.proc.stdin.flush()

    def send(self, kind: str, **kw) -> None:
        import mido

        self.raw(bytes(mido.Message(kind, **kw).bytes()))

    def clock(self, bpm: float, beats: float, jitter_s: float, seed: int = 0) -> None:
        """MIDI clock at `bpm` for `beats` beats, each tick jittered (sent from a thread of its own)."""
        rng = random.Random(seed)
        period = 60.0 / bpm / 24
        t0 = time.monotonic() + 0.01
        for i in range(int(beats * 24)):
            delay = t0 + i * period + rng.uniform(-jitter_s, jitter_s) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send("clock")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.01)


async def deliver(keys: Sender, cond: Callable[[], bool], *msgs: tuple, tries: int = 5) -> None:
    """Send `msgs` ((kind, {fields}) pairs) until `cond` holds. A JACK xrun on a busy machine drops the
    MIDI of that cycle, as it would live; these messages are all safe to repeat, so a lost one is resent."""
    for _ in range(tries):
        for kind, kw in msgs:
            keys.send(kind, **kw)
        try:
            await until(cond, timeout=1.5)
            return
        except AssertionError:
            continue
    raise AssertionError(f"{msgs} had no effect after {tries} tries")


def cc(control: int, value: int, channel: int = 0) -> tuple:
    return ("control_change", {"control": control, "value": value, "channel": channel})


def note(n: int, velocity: int = 100) -> tuple:
    return ("note_on", {"note": n, "velocity": velocity})


def off(n: int) -> tuple:
    return ("note_off", {"note": n})


def program(n: int) -> tuple:
    return ("program_change", {"program": n})


def play(jack_server: str, inst, scenario, **midi_kw):
    """Run `scenario(midi, sender)` on an asyncio loop with a MidiControl on a fresh virtual JACK input."""
    name = f"lmdm-midi-{random.randrange(1 << 30)}"

    async def main():
        midi = MidiControl(inst, client_name=name, api="jack", on_error=lambda msg: None, **midi_kw)
        sender = Sender(jack_server, midi.port)
        try:
            return await scenario(midi, sender)
        finally:
            sender.close()
            midi.close()

    return asyncio.run(main())


def test_channel_filter_and_mapped_values_through_handle(idle):
    """The same path RtMidi's messages take (handle), driven directly: which knob and channel does what."""
    import mido

    midi = MidiControl(idle, start=False, on_error=lambda msg: None)
    midi.map(24, "cfg_pp", 0.5, 1.0, channel=3)
    midi.map(25, "drop", 1, 16)
    midi.handle(mido.Message("control_change", control=24, value=127, channel=0))  # the wrong channel
    assert idle.cfg_pp() is None
    midi.handle(mido.Message("control_change", control=24, value=127, channel=3))
    assert idle.cfg_pp() == 1.0
    midi.handle(mido.Message("control_change", control=25, value=0))  # a button's release drops nothing
    midi.handle(mido.Message("sysex", data=[1, 2, 3]))  # not a control: counted, ignored
    assert midi.received == {"control_change": 3, "sysex": 1} and not midi.errors


@pytest.mark.jack
def test_cc_lands_in_the_instrument_with_lin_and_exp_curves(jack_server, inst):
    async def scenario(midi, keys):
        assert midi.api == "UNIX_JACK" and midi.port.endswith(":midi_in")
        midi.map(20, "cfg", 1.0, 7.0)  # lin
        midi.map(21, "gain", 0.1, 2.0, "exp")
        midi.map(22, "steps", 1, 16)
        midi.map(23, "weight:choir", 0.0, 1.0)
        await deliver(keys, lambda: inst.cfg() == pytest.approx(1 + 6 * 64 / 127), cc(20, 64))
        await deliver(keys, lambda: inst.gain() == pytest.approx(0.1 * 20 ** (64 / 127)), cc(21, 64))
        await deliver(keys, lambda: inst.steps() == 16, cc(22, 127))
        await deliver(keys, lambda: inst.prompts() == {"dub": 1.0, "choir": 1.0}, cc(23, 127))
        await deliver(keys, lambda: inst.gain() == pytest.approx(2.0), cc(21, 127))
        inst.wait_blocks(2)
        assert inst.stream.params.sampler.steps == 16
        assert inst.stream.params.sampler.cfg == pytest.approx(1 + 6 * 64 / 127)
        assert dict(inst.stream.params.prompts) == {"dub": 1.0, "choir": 1.0}
        assert not midi.errors

    play(jack_server, inst, scenario)


@pytest.mark.jack
def test_notes_add_and_remove_prompt_slots(jack_server, inst):
    async def scenario(midi, keys):
        midi.map_note(60, "choir", 0.5)
        midi.map_note(62, "strings")
        midi.map_note(64, "dub", 0.2)  # already in the blend at 1.0
        await deliver(keys, lambda: inst.prompts() == {"dub": 1.0, "choir": 0.5}, note(60))
        want = {"dub": 0.2, "choir": 0.5, "strings": 1.0}
        await deliver(keys, lambda: inst.prompts() == want, note(62), note(64))
        # note 64 off as a zero-velocity note-on: dub gets its weight back
        await deliver(keys, lambda: inst.prompts() == {"dub": 1.0, "strings": 1.0}, off(60), note(64, 0))
        await deliver(keys, lambda: inst.prompts() == {"dub": 1.0}, note(61), off(62))  # 61 is not mapped
        await deliver(keys, lambda: inst.prompts() == {"dub": 1.0, "choir": 0.5}, note(60))
        inst.wait_blocks(2)
        assert dict(inst.stream.params.prompts) == {"dub": 1.0, "choir": 0.5}  # the stream plays the blend
        assert not midi.errors

    play(jack_server, inst, scenario)


@pytest.mark.jack
def test_program_change_loads_the_mapped_patch(jack_server, idle):
    loaded = []

    def load_patch(name):
        if name == "broken":
            raise FileNotFoundError(f"no patch file {name}.toml")
        loaded.append(name)
        idle.cfg(4.0)

    async def scenario(midi, keys):
        await deliver(keys, lambda: loaded[-1:] == ["dub-techno"], program(5))
        await deliver(keys, lambda: any("broken" in e for e in midi.errors), program(6))  # the loader fails
        await deliver(keys, lambda: any("program 7" in e for e in midi.errors), program(7))  # not mapped
        await deliver(keys, lambda: loaded[-1:] == ["acid"], program(1))
        assert [x for i, x in enumerate(loaded) if loaded[i - 1 : i] != [x]] == ["dub-techno", "acid"]
        assert idle.cfg() == 4.0
        assert {e for e in midi.errors} == {
            "program 6 -> patch 'broken': no patch file broken.toml",
            "program 7 is not mapped to a patch",
        }

    play(
        jack_server,
        idle,
        scenario,
        patch_loader=load_patch,
        programs={5: "dub-techno", 6: "broken", 1: "acid"},
    )


@pytest.mark.jack
def test_program_change_plays_a_shipped_patch_and_takes_its_controls(jack_server, idle):
    from lmdm_live.live.patch import apply_patch, load_patch

    async def scenario(midi, keys):
        midi.map(20, "seed", 0, 127)
        midi.patch_loader = lambda name: apply_patch(idle, load_patch(name), at="now")  # returns its controls
        await deliver(keys, lambda: idle.bpm() == 126.0, program(9))
        assert max(idle.prompts().values()) == 1.0 and "warehouse reverb, dark and hypnotic" in idle.prompts()
        assert sorted(m.cc for m in midi.mappings) == [7, 71, 74]  # the patch's knobs replace ours
        await deliver(keys, lambda: idle.cfg() == 6.0, cc(74, 127))
        await deliver(keys, lambda: idle.prompts().get("pounding 909 kick drum") == 0.8, note(36))
        # the acid patch's own program map: 4 = drone
        await deliver(keys, lambda: "warehouse reverb, dark and hypnotic" not in idle.prompts(), program(4))
        assert idle.bpm() == 60.0 and not midi.errors

    play(jack_server, idle, scenario, programs={9: "acid"})


@pytest.mark.jack
def test_learn_binds_the_next_cc_moved(jack_server, idle):
    async def scenario(midi, keys):
        fut = midi.learn("cfg")
        assert midi.learning == "cfg"
        await deliver(keys, fut.done, cc(33, 10, channel=2))
        m = fut.result()
        assert (m.cc, m.channel, m.param) == (33, 2, "cfg")
        assert (m.lo, m.hi) == (1.0, 7.0)  # the default range of cfg
        assert midi.learning is None and idle.cfg() == 1.0  # binding does not move the param
        await deliver(keys, lambda: idle.cfg() == 7.0, cc(33, 127, channel=2))
        midi.learn("gain", 0.0, 1.0)
        await deliver(keys, lambda: len(midi.mappings) == 2, cc(34, 127))
        await deliver(keys, lambda: idle.gain() == 0.0, cc(34, 0))
        with pytest.raises(ValueError, match="unknown"):
            midi.learn("volume")
        assert midi.learning is None
        return midi.to_dict()

    saved = play(jack_server, idle, scenario)
    assert saved["cc"] == [
        {"cc": 33, "param": "cfg", "lo": 1.0, "hi": 7.0, "curve": "lin", "channel": 2},
        {"cc": 34, "param": "gain", "lo": 0.0, "hi": 1.0, "curve": "lin", "channel": 0},
    ]


@pytest.mark.jack
def test_a_bad_mapping_is_rejected_and_the_old_ones_keep_working(jack_server, idle):
    async def scenario(midi, keys):
        midi.map(20, "cfg", 1.0, 7.0)
        before = midi.to_dict()
        with pytest.raises(ValueError, match="volume"):
            midi.map(21, "volume")
        with pytest.raises(ValueError, match="hi must lie in gain's range"):
            midi.add({"cc": 21, "param": "gain", "lo": 0, "hi": 9})
        with pytest.raises(ValueError, match=r"cc\[1\].*curve"):
            midi.load(
                {
                    "cc": [
                        {"cc": 5, "param": "gain", "lo": 0, "hi": 1},
                        {"cc": 6, "param": "cfg", "lo": 1, "hi": 2, "curve": "x"},
                    ]
                }
            )
        assert midi.to_dict() == before
        # a value the instrument refuses at play time: the only prompt's weight at 0
        midi.map(22, "weight:dub", 0.0, 1.0)
        await deliver(keys, lambda: bool(midi.errors), cc(22, 0))
        for junk in (b"\x85", b"\x40\x41", b"\xf4", b"\xb0\x14"):  # a lone data byte, undefined, cut short
            keys.raw(junk)
        await deliver(keys, lambda: idle.cfg() == 7.0, cc(20, 127))
        assert all("cc 22 -> weight:dub" in e and "\n" not in e for e in midi.errors)
        assert idle.prompts() == {"dub": 1.0}

    play(jack_server, idle, scenario)


@pytest.mark.jack
@pytest.mark.parametrize("bpm", [120.0, 93.0])
def test_midi_clock_sets_bpm_within_one_bpm(jack_server, inst, bpm):
    async def scenario(midi, keys):
        clock = midi.clock
        await deliver(keys, lambda: midi.playing is True, ("start", {}))
        t0 = time.monotonic()
        await asyncio.to_thread(keys.clock, bpm, 6, 0.002, int(bpm))
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.4)  # let a rate-limited last value land
        n = midi.received["clock"]
        assert n >= 0.75 * 6 * 24  # xruns on a busy machine drop ticks, as they would live
        assert abs(midi.bpm - bpm) < 1.0, midi.bpm
        assert abs(inst.bpm() - bpm) < 1.0, inst.bpm()
        assert clock.bpm_sets <= elapsed / clock.min_interval_s + 2  # the engine was not flooded
        assert clock.reports["midi"].beat == pytest.approx((n - 1) / 24)  # counted from the start message

    play(jack_server, inst, scenario, clock=Clock(inst, "midi"))


@pytest.mark.jack
def test_transport_and_inactive_midi_clock(jack_server, idle):
    async def scenario(midi, keys):
        await deliver(keys, lambda: midi.playing is True, ("start", {}))
        await asyncio.to_thread(keys.clock, 140.0, 1.5, 0.0)
        await deliver(keys, lambda: midi.playing is False, ("stop", {}))
        await deliver(keys, lambda: midi.playing is True, ("continue", {}))
        assert [k for k, _ in midi.transport] == ["start", "stop", "continue"]
        assert [t for _, t in midi.transport] == sorted(t for _, t in midi.transport)
        before = midi.received["clock"]
        # bar 2 (16 sixteenths = 4 beats), then a tick: the tick lands on beat 4
        await deliver(
            keys,
            lambda: midi.received["songpos"] >= 1 and midi.received["clock"] > before,
            ("songpos", {"pos": 16}),
            ("clock", {}),
        )
        assert midi.clock.reports["midi"].beat == 4.0
        assert abs(midi.bpm - 140.0) < 2.0
        assert idle.bpm() == 120.0  # the clock follows tidal, so MIDI clock only reports

    clock = Clock(idle, "tidal")
    play(jack_server, idle, scenario, clock=clock)
    assert clock.bpm_sets == 0


def test_the_api_is_alsa_where_its_sequencer_exists_else_jack(idle):
    import os

    from lmdm_live.control.midi import MidiUnavailable, choose_api

    assert choose_api() == ("LINUX_ALSA" if os.path.exists("/dev/snd/seq") else "UNIX_JACK")
    assert choose_api("jack") == "UNIX_JACK"
    if not os.path.exists("/dev/snd/seq"):  # forcing ALSA here fails in one clear line

        async def main():
            with pytest.raises(MidiUnavailable, match="LINUX_ALSA") as e:
                MidiControl(idle, api="alsa")
            assert "\n" not in str(e.value)

        asyncio.run(main())


def test_midi_control_needs_a_loop_and_a_real_port(idle):
    from lmdm_live.control.midi import MidiUnavailable

    with pytest.raises(MidiUnavailable, match="asyncio loop"):
        MidiControl(idle, api="jack")
    with pytest.raises(ValueError, match="MIDI api"):
        MidiControl(idle, api="serial", start=False)


@pytest.mark.jack
def test_a_second_instrument_gets_its_own_port_name(jack_server, idle):
    async def main():
        name = f"lmdm-dup-{random.randrange(1 << 30)}"
        with (
            MidiControl(idle, client_name=name, api="jack") as a,
            MidiControl(idle, client_name=name, api="jack") as b,
        ):
            assert a.port == f"{name}:midi_in" and b.port == f"{name}-2:midi_in"
            keys = Sender(jack_server, b.port)
            b.map(20, "cfg", 1, 7)
            await deliver(keys, lambda: idle.cfg() == 7.0, cc(20, 127))
            assert a.received["control_change"] == 0  # the message went where `port` said
            keys.close()

    asyncio.run(main())


@pytest.mark.jack
def test_a_missing_named_input_is_one_clear_error(jack_server, idle):
    from lmdm_live.control.midi import MidiUnavailable

    async def main():
        with pytest.raises(MidiUnavailable, match="no MIDI input named 'nanoKONTROL9'"):
            MidiControl(idle, port="nanoKONTROL9", api="jack")

    asyncio.run(main())
