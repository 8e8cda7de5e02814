"""Patches: shipped ones load and play; broken ones are refused whole, naming the line or key, with the
instrument untouched; hot reload applies good saves and refuses bad ones while the music goes on."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from lmdm_live import Instrument
from lmdm_live.audio import FileBackend
from lmdm_live.control.midi import CCMapping, NoteMapping
from lmdm_live.live.patch import (
    SHIPPED_DIR,
    Patch,
    PatchError,
    find_patch,
    load_patch,
    parse_patch,
)
from lmdm_live.live.patch_watch import PatchWatcher
from lmdm_live.live.replay import read_log
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

ROOT = Path(__file__).resolve().parents[2]
WINDOW = LMDMConfig(mode="causal", context_frames=16, block_frames=8)
SHIPPED = sorted(SHIPPED_DIR.glob("*.toml"))


@pytest.fixture(scope="module")
def model():
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)


@pytest.fixture
def inst(model, tmp_path):
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, realtime=False)
    i = Instrument(model, backend=backend, steps=2, log=tmp_path / "ev.jsonl", quiet=True)
    yield i
    i.unwatch()
    i.stop()


def state(inst) -> dict:
    """Everything a patch may set, as the instrument reports it."""
    return {
        "prompts": inst.prompts(),
        "sampler": inst.sampler(),
        "steps": inst.steps(),
        "cfg": inst.cfg(),
        "cfg_pp": inst.cfg_pp(),
        "tempo_guidance": inst.tempo_guidance(),
        "gain": inst.gain(),
        "bpm": inst.bpm(),
        "seed": inst.seed(),
    }


def assert_plays(inst, patch: Patch) -> None:
    """The instrument's settings are the patch's, and the stream really generates with them."""
    st = state(inst)
    assert st["prompts"] == dict(patch.prompts)
    for key in ("sampler", "steps", "gain", "bpm", "seed"):
        assert st[key] == getattr(patch, key), key
    if patch.cfg is not None:
        assert st["cfg"] == patch.cfg
    if patch.cfg_pp is not None:
        assert st["cfg_pp"] == patch.cfg_pp
    if patch.tempo_guidance is not None:
        assert st["tempo_guidance"] == patch.tempo_guidance
    inst.wait_blocks(2)
    p = inst.stream.params
    assert p.prompts == patch.prompts
    assert (p.sampler.sampler, p.sampler.steps) == (patch.sampler, patch.steps)
    assert p.sampler.cfg_pp == patch.cfg_pp
    if patch.tempo_guidance is not None:
        assert p.sampler.tempo_guidance == patch.tempo_guidance
    if patch.eject_frames is not None:
        assert p.eject_frames == patch.eject_frames
    assert inst.stream.seed == patch.seed


# --- shipped patches -------------------------------------------------------------------------------------


def test_at_least_five_patches_ship():
    assert len(SHIPPED) >= 5
    assert {"acid", "ambient", "dub_techno", "jungle", "drone"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_patch_loads_and_plays(inst, path):
    patch = load_patch(path)
    assert patch.name == path.stem and patch.description
    assert patch.prompts and patch.steps and patch.bpm and patch.gain is not None and patch.seed is not None
    # the documented schema heads every shipped file
    assert "[[midi.cc]]" in path.read_text().split("\n\n")[0]
    controls = inst.load(path.stem, at="now")  # by name, as /lmdm/patch and program changes do
    assert controls == patch.controls
    assert controls.cc and all(isinstance(m, CCMapping) for m in controls.cc)
    assert controls.notes and all(isinstance(m, NoteMapping) for m in controls.notes)
    assert all(p.is_file() for p in controls.programs.values())
    assert controls.osc_aliases
    assert_plays(inst, patch)
    st = inst.status()
    assert st["faults"] == 0 and st["blocks"] >= 2


def test_patch_lands_whole_on_the_next_bar(inst, tmp_path):
    """Prompts, sampler, seed and gain all change at one block: the first on or after the next bar line
    (of the tempo playing when it was loaded; the patch's own bpm governs the bars after)."""
    inst.wait_blocks(3)
    bar_s = 4 * 60.0 / inst.bpm()
    loaded_at = inst.stream.block_index
    inst.load("jungle", at="bar")
    inst.wait_blocks(int(2 * bar_s / inst.model.block_seconds) + 2)
    inst.stop()
    events = read_log(tmp_path / "ev.jsonl")
    blocks = {e["type"]: e["block"] for e in events if e["type"] in ("params", "seed", "gain")}
    assert set(blocks) == {"params", "seed", "gain"}
    assert len(set(blocks.values())) == 1, blocks
    block_s = inst.model.block_seconds
    start = blocks["params"] * block_s
    phase = start % bar_s
    assert blocks["params"] >= loaded_at and start > 0
    assert phase < block_s + 1e-9 or bar_s - phase < 1e-9, (start, bar_s)  # the first block of a bar
    assert inst.bpm() == 170


# --- refusing broken patches -----------------------------------------------------------------------------

GOOD_HEAD = """name = "broken"
[prompts]
"trap beat" = 1.0
[play]
gain = 0.5
"""

BROKEN = {
    "bad_toml": (GOOD_HEAD + "[sampler]\nsteps = \n", ["line 7, column", "invalid TOML"]),
    "unknown_key": (GOOD_HEAD + "[sampler]\nstepz = 4\n", ["line 7", "[sampler].stepz", "unknown key"]),
    "unknown_table": (GOOD_HEAD + "[samplr]\nsteps = 4\n", ["line 6", "samplr", "unknown table"]),
    "out_of_range": (
        GOOD_HEAD + "[sampler]\nsteps = 0\n",
        ["line 7: [sampler].steps: must be in 1..100, got 0"],
    ),
    "wrong_type": (GOOD_HEAD.replace("0.5", '"loud"'), ["line 5: [play].gain: must be a number"]),
    "unknown_midi_param": (
        GOOD_HEAD + '[[midi.cc]]\ncc = 74\nparam = "resonance"\nlo = 0.0\nhi = 1.0\n',
        ["line 8: [[midi.cc]] #1", "resonance"],
    ),
    "midi_cc_range": (
        GOOD_HEAD + '[[midi.cc]]\ncc = 200\nparam = "cfg"\nlo = 1.0\nhi = 2.0\n',
        ["line 7: [[midi.cc]] #1", "cc must be"],
    ),
    "missing_program_patch": (GOOD_HEAD + '[midi.programs]\n3 = "no_such_patch"\n', ["[midi.programs].3"]),
    "osc_alias_builtin": (GOOD_HEAD + '[osc.aliases]\n"/lmdm/cfg" = "gain"\n', ['[osc.aliases]."/lmdm/cfg"']),
    "osc_alias_param": (
        GOOD_HEAD + '[osc.aliases]\n"/knob/1" = "cutoff"\n',
        ['line 7: [osc.aliases]."/knob/1"', "cutoff"],
    ),
    "zero_weights": ('[prompts]\n"a" = 0\n"b" = 0\n', ["[prompts]", "must not all be 0"]),
    "cfg_pp_word": (
        GOOD_HEAD + '[sampler]\ncfg_pp = "on"\n',
        ['[sampler].cfg_pp: must be a number or "off"'],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_patch_is_refused_whole(inst, tmp_path, case):
    text, expected = BROKEN[case]
    path = tmp_path / "broken.toml"
    path.write_text(text)
    inst.wait_blocks(1)
    before, params = state(inst), inst.stream.params
    with pytest.raises(ValueError) as e:
        inst.load(path, at="now")
    msg = str(e.value)
    assert msg.startswith("broken.toml: ") and "\n" not in msg
    for part in expected:
        assert part in msg, (part, msg)
    inst.wait_blocks(2)
    assert state(inst) == before and inst.stream.params == params
    assert inst.status()["faults"] == 0


def test_every_problem_is_reported_in_file_order(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text('[sampler]\nsteps = 0\ncfg = "x"\n[play]\nbpm = 1000\nseed = 1.5\n')
    with pytest.raises(PatchError) as e:
        load_patch(path)
    lines = [int(p.split(":")[0].split()[1]) for p in e.value.problems]
    assert lines == [2, 3, 5, 6]


def test_files_that_are_not_patches(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[prompts]\n"caf\xe9" = 1.0\n')
    with pytest.raises(PatchError, match=r"latin1.toml: line 2: not UTF-8 text"):
        load_patch(bad)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(PatchError, match="too large for a patch"):
        load_patch(big)
    assert find_patch("acid.toml") == find_patch("acid") == SHIPPED_DIR / "acid.toml"


def test_a_patch_for_another_model_is_refused(inst, tmp_path):
    path = tmp_path / "other.toml"
    path.write_text('model = "small"\n[prompts]\n"house" = 1.0\n')
    before = state(inst)
    with pytest.raises(ValueError, match="patch is for model 'small' but the instrument plays 'tiny'"):
        inst.load(path)
    assert state(inst) == before
    path.write_text('model = "tiny"\n[prompts]\n"house" = 1.0\n')  # the model that is playing: fine
    inst.load(path, at="now")
    assert inst.prompts() == {"house": 1.0}


def test_bad_at_changes_nothing(inst):
    before = state(inst)
    with pytest.raises(ValueError, match="at must be"):
        inst.load("acid", at="soon")
    assert state(inst) == before


def test_unknown_patch_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match=r"no patch named 'acdi' \(available: .*acid"):
        find_patch("acdi")
    with pytest.raises(ValueError, match="patch file not found"):
        load_patch("missing/dir/x.toml")


def test_a_patch_sets_tempo_guidance(inst):
    patch = parse_patch('name = "tg"\n[prompts]\n"acid" = 1.0\n[sampler]\ntempo_guidance = 12\n')
    assert patch.tempo_guidance == 12.0 and isinstance(patch.tempo_guidance, float)
    inst.load(patch, at="now")
    inst.wait_blocks(2)
    assert inst.tempo_guidance() == 12.0 and inst.stream.params.sampler.tempo_guidance == 12.0
    with pytest.raises(PatchError, match=r"\[sampler\]\.tempo_guidance: must be a number"):
        parse_patch('[sampler]\ntempo_guidance = "lots"\n')


# The instrument's setters and the patch validator must draw the same lines, or a patch could hold a value
# the instrument refuses (half-applied patch) or refuse one it accepts.
RANGES = [
    ("play", "gain", "gain", [-0.01, 0.0, 4.0, 4.01]),
    ("play", "bpm", "bpm", [19.9, 20.0, 400.0, 400.5]),
    ("sampler", "steps", "steps", [0, 1, 100, 101]),
    ("sampler", "cfg", "cfg", [-0.5, 0.0, 20.0, 20.5]),
    ("sampler", "cfg_pp", "cfg_pp", [-0.1, 0.0, 2.0, 2.1]),
    ("sampler", "tempo_guidance", "tempo_guidance", [-0.1, 0.0, 50.0, 50.5]),
    ("sampler", "sampler", "sampler", ["euler", "pingpong", "heun"]),
]


@pytest.mark.parametrize("table,key,setter,values", RANGES, ids=[r[1] for r in RANGES])
def test_patch_ranges_agree_with_the_instrument(inst, table, key, setter, values):
    for v in values:
        try:
            parse_patch(f"[{table}]\n{key} = {json.dumps(v)}\n")
            patch_ok = True
        except PatchError:
            patch_ok = False
        old = getattr(inst, setter)()
        try:
            getattr(inst, setter)(v)
            inst_ok = True
        except ValueError:
            inst_ok = False
        getattr(inst, setter)("off" if old is None else old)
        assert patch_ok == inst_ok, (key, v, patch_ok, inst_ok)


# --- hot reload ------------------------------------------------------------------------------------------

PATCH_V = """name = "live"
[prompts]
"{prompt}" = 1.0
[sampler]
steps = {steps}
cfg = {cfg}
[play]
gain = 0.7
bpm = 110
"""


def wait_for(cond, timeout=15.0) -> float:
    """Seconds until cond() held (generous: the machine is shared); fails after timeout."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_hot_reload_applies_good_saves_and_refuses_broken_ones(inst, tmp_path):
    path = tmp_path / "live.toml"
    path.write_text(PATCH_V.format(prompt="deep house", steps=2, cfg=1.0))
    errors: list[str] = []
    w = inst.watch(path, at="now", on_error=errors.append)
    assert inst.prompts() == {"deep house": 1.0} and inst.gain() == 0.7  # applied at once
    inst.wait_blocks(2)

    # a good edit is heard
    path.write_text(PATCH_V.format(prompt="minimal techno", steps=3, cfg=2.5))
    took = wait_for(lambda: inst.cfg() == 2.5)
    print(f"hot reload applied after {took:.2f} s")
    assert inst.prompts() == {"minimal techno": 1.0} and inst.steps() == 3
    inst.wait_blocks(2)
    assert inst.stream.params.prompts == (("minimal techno", 1.0),)
    assert inst.stream.params.sampler.cfg == 2.5

    # a broken save is refused with its line; the previous patch keeps playing
    blocks = inst.status()["blocks"]
    path.write_text(PATCH_V.format(prompt="gabber", steps=0, cfg=2.5))
    wait_for(lambda: errors)
    assert "live.toml: line 5: [sampler].steps: must be in 1..100, got 0" in errors[-1]
    assert "keeps playing" in errors[-1]
    inst.wait_blocks(4)
    assert inst.status()["blocks"] >= blocks + 4 and inst.status()["faults"] == 0
    assert inst.prompts() == {"minimal techno": 1.0} and inst.stream.params.prompts == (
        ("minimal techno", 1.0),
    )

    path.write_text(
        PATCH_V.format(prompt="gabber", steps=2, cfg=2.5).replace("= 1.0\n[sampler]", "= \n[sampler]")
    )
    wait_for(lambda: len(errors) == 2)
    assert "live.toml: line 3, column" in errors[-1] and "invalid TOML" in errors[-1]
    assert inst.prompts() == {"minimal techno": 1.0}

    # the fix applies
    path.write_text(PATCH_V.format(prompt="gabber", steps=2, cfg=1.0))
    wait_for(lambda: w.applied == 2)  # the whole patch (its prompts land a moment before its cfg)
    assert inst.prompts() == {"gabber": 1.0}
    assert inst.cfg() == 1.0 and w.rejected == 2 and w.last_error is None
    inst.wait_blocks(2)
    assert inst.stream.params.prompts == (("gabber", 1.0),)

    inst.unwatch()
    assert not w.running
    assert inst.status()["faults"] == 0 and not inst.engine.errors


def test_watcher_on_a_loop_calls_back_on_the_loop(tmp_path):
    """In the REPL the watcher hands patches to the asyncio loop, so they never race the performer's code."""
    path = tmp_path / "p.toml"
    path.write_text('[prompts]\n"a" = 1.0\n')
    seen: list[tuple[str, threading.Thread]] = []

    async def main():
        loop = asyncio.get_running_loop()
        w = PatchWatcher(
            path, lambda p: seen.append((p.prompts[0][0], threading.current_thread())), 0.05, loop=loop
        )
        w.start()
        await asyncio.sleep(0.3)
        path.write_text('[prompts]\n"b" = 1.0\n')
        t0 = time.monotonic()
        while len(seen) < 2 and time.monotonic() - t0 < 15:
            await asyncio.sleep(0.02)
        w.stop()

    asyncio.run(main())
    assert [s[0] for s in seen] == ["a", "b"]  # no digest given: the file as it is counts as the first change
    assert all(t is threading.main_thread() for _, t in seen)


def test_watcher_survives_a_vanishing_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[prompts]\n"a" = 1.0\n')
    got, errors = [], []
    w = PatchWatcher(path, got.append, interval=0.05, on_error=errors.append).start()
    wait_for(lambda: got)
    path.unlink()
    wait_for(lambda: errors)
    assert "gone" in errors[0]
    path.write_text('[prompts]\n"b" = 1.0\n')
    wait_for(lambda: len(got) == 2)
    w.stop()
    assert got[1].prompts == (("b", 1.0),) and len(errors) == 1


# --- examples --------------------------------------------------------------------------------------------


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_repl_session_example_plays_through(inst, capsys):
    session = _example("repl_session").session
    block_s = inst.model.block_seconds

    def bars(n: float) -> None:  # a quarter of the blocks n bars last (the real script sleeps n bars)
        inst.wait_blocks(max(1, round(n * 60 / inst.bpm() / block_s)))

    session(inst, bars)
    deadline = time.monotonic() + 30  # the patch lands on the bar after it was loaded
    while inst.prompts() != dict(load_patch("acid").prompts) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inst.prompts() == dict(load_patch("acid").prompts)  # it ends on the acid patch
    st = inst.status()
    assert st["faults"] == 0 and st["blocks"] > 20
    assert "x_realtime" in capsys.readouterr().out  # it printed the status table


def test_render_script_example(tmp_path):
    from lmdm_live.control.commands import load_script
    from lmdm_live.live.stream import StreamParams

    script = ROOT / "examples" / "changes.py"
    schedule = load_script(script, StreamParams(), block_seconds=0.25)
    assert len(schedule) >= 6
    last = schedule[max(schedule)]
    assert last.dominant and last.sampler.steps >= 1
    out = tmp_path / "changes.wav"
    render = _example("render_script")
    info = render.main(
        ["--model", "tiny", "--mode", "causal", "--context", "16", "--block", "8", "--steps", "2"]
        + ["--seconds", "3", "--out", str(out)]
    )
    audio, sr = sf.read(str(out))
    assert info["out"] == str(out) and sr == 44100 and len(audio) >= 2.5 * sr
    assert info["nonfinite_blocks"] == 0


def test_fast_saves_apply_the_last_good_one(tmp_path):
    """Saves faster than the watcher's interval, good and broken by turns, the last one broken: the file never
    holds still for an interval while they come; once they stop, the newest good save is applied (not the
    original, not nothing), the broken one is reported, and an empty save is not taken for a patch."""
    from realtime import MachineTooBusy

    path = tmp_path / "live.toml"
    path.write_text(PATCH_V.format(prompt="save 0", steps=2, cfg=1.0))
    got: list[Patch] = []
    errors: list[str] = []
    w = PatchWatcher(path, got.append, interval=0.25, on_error=errors.append).start()
    try:
        wait_for(lambda: got)
        saves, gaps, last = 31, [], time.monotonic()  # odd saves are broken; the last one too
        for n in range(1, saves + 1):
            path.write_text(PATCH_V.format(prompt=f"save {n}", steps=2 if n % 2 == 0 else 0, cfg=1.0))
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            time.sleep(0.12)
        if max(gaps[1:]) > 0.24:  # the file held still for an interval: this run cannot judge the burst
            raise MachineTooBusy(f"saves meant 0.12 s apart came up to {max(gaps[1:]):.2f} s apart")
        wait_for(lambda: any("applying the last good save" in e for e in errors))
        time.sleep(1.0)  # and nothing else is applied later
        assert [p.prompts[0][0] for p in got] == ["save 0", f"save {saves - 1}"], [p.prompts for p in got]
        assert (
            len(errors) == 1 and "live.toml: line 5: [sampler].steps: must be in 1..100, got 0" in errors[0]
        )
        path.write_text("")  # an editor truncating the file before it writes it
        wait_for(lambda: "empty" in errors[-1])
        time.sleep(0.6)
        assert len(got) == 2 and w.applied == 2 and w.rejected == 2
    finally:
        w.stop()
