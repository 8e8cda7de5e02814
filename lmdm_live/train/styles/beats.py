"""Beat-led styles: trap's half-time with hi-hat rolls, jungle's chopped breaks, lo-fi hip hop's lazy swing."""

from __future__ import annotations

import random

from ..music import CLAP, DRUMS, HAT, KICK, OPEN_HAT, RIDE, SNARE, Note, Part, chord
from .kit import (
    SIDE_STICK,
    Setup,
    StyleSpec,
    bass_root,
    comp,
    hits,
    lead_range,
    phrases,
    scale_notes,
    vel,
    voice,
)


def _harmony(su: Setup, prog: tuple[int, ...], size: int = 3):
    return lambda b: chord(su.key, su.mode, prog[b % len(prog)], 4, size, dominant=True)


# --- trap -------------------------------------------------------------------------------------------------

TRAP_LEADS = (73, 10, 81, 40)
TRAP_KICKS = ((0, 7, 10), (0, 3, 11), (0, 10, 11, 14), (0, 6, 9))


def _hat_roll(drums: Part, g, bar: int, step: int, rng: random.Random) -> None:
    """A roll over two steps: triplet or thirty-second hits that swell."""
    n = rng.choice((3, 4, 6))
    for k in range(n):
        drums.notes.append(Note(g.t(bar, step + 2 * k / n), g.step / 2, HAT, 50 + 40 * k // n))


def make_trap(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(((0, 0, 5, 5), (0, 5, 3, 4), (0, 3, 0, 5), (0, 0, 5, 6)))
    kicks = rng.choice(TRAP_KICKS)
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 118) for s in kicks] + [(8, CLAP, 118), (8, SNARE, 96)]  # the backbeat on three
    bass = Part("bass", 39)
    slide = rng.choice((0, 7, 12))  # where the last 808 note of a bar goes
    pad = Part("chords", rng.choice((48, 91, 89)))
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        rolls = rng.sample((6, 10, 12, 14), rng.randint(1, 2))
        for s in range(0, 16, 2):
            if s in rolls:
                _hat_roll(drums, g, b, s, rng)
            else:
                hits(drums, g, b, [(s, HAT, 76)], rng, 0.5)
        if rng.random() < 0.3:
            hits(drums, g, b, [(15, OPEN_HAT, 70)], rng)
        if b % 4 == 3:
            hits(drums, g, b, [(13, SNARE, 72), (14, SNARE, 84), (15, CLAP, 94)], rng)
        root = bass_root(su, prog[b % 4], 40)
        for k, s in enumerate(kicks):  # the 808 follows the kick and rings until the next one
            end = kicks[k + 1] if k + 1 < len(kicks) else 16
            pitch = root + (slide if k == len(kicks) - 1 else 0)
            bass.notes.append(Note(g.t(b, s), (end - s) * g.step * 0.95, pitch, vel(rng, 96, 4)))
        prev = voice(chord(su.key, su.mode, prog[b % 4], 4, 3, dominant=True), 55, 72, prev)
        comp(pad, g, b, prev, [(0, 16)], rng, 64)
    lead = Part("lead", rng.choice(TRAP_LEADS))
    pool = scale_notes(su.key, "minor", *lead_range(lead.program))
    lead.notes = phrases(g, rng, pool, _harmony(su, prog), density=0.3, phrase_bars=1, legato=0.85, loud=120)
    return [drums, bass, pad, lead], "half-time trap drums with hi-hat rolls"


TRAP = StyleSpec(
    name="trap",
    tempo=(130, 150),
    meters=(4,),
    modes=("minor",),
    leads=TRAP_LEADS,
    moods=("dark", "tense", "gritty", "energetic", "melancholic"),
    description="half-time drums with the clap on three, hi-hat rolls, a long 808-style synth bass "
    "on the kick, dark pads or choir, flute, music box, saw or violin loop",
    make=make_trap,
)


# --- jungle -----------------------------------------------------------------------------------------------

JUNGLE_LEADS = (4, 65, 73, 81, 11)
JUNGLE_BREAK = (  # two bars of a chopped break: kick, snare and its ghost notes, (step, key, velocity)
    [(0, KICK, 120), (10, KICK, 110), (4, SNARE, 118), (12, SNARE, 118), (7, SNARE, 50), (9, SNARE, 56)]
    + [(15, SNARE, 46)],
    [(0, KICK, 120), (2, KICK, 100), (10, KICK, 106), (4, SNARE, 118), (12, SNARE, 110), (7, SNARE, 48)]
    + [(14, SNARE, 92), (15, SNARE, 50)],
)
JUNGLE_BASS = (((0, 8, 0), (10, 6, 0)), ((0, 6, 0), (8, 2, 7), (10, 6, -2)))  # two bars, semitones


def make_jungle(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(((0, 0, 6, 6), (0, 0, 5, 6), (0, 0, 3, 3)))
    drums = Part("drums", DRUMS)
    bass = Part("bass", 39)
    lead = Part("lead", rng.choice(JUNGLE_LEADS))
    pad = Part("chords", rng.choice((89, 91, 95, 48)))
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, JUNGLE_BREAK[b % 2] + [(s, RIDE, 72) for s in range(0, 16, 2)], rng)
        if b % 4 == 3:  # the break chopped into a snare run
            hits(drums, g, b, [(s, SNARE, 70 + 12 * (s - 12)) for s in (12, 13, 14, 15)], rng)
        root = bass_root(su, prog[b % 4], 40)
        for s, n, off in JUNGLE_BASS[b % 2]:
            bass.notes.append(Note(g.t(b, s), n * g.step * 0.95, root + off, vel(rng, 90, 4)))
        if b % 2 == 0:
            prev = voice(chord(su.key, su.mode, prog[b % 4], 4, 4), 55, 72, prev)
            comp(pad, g, b, prev, [(0, 32)], rng, 58)
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program))
    lead.notes = phrases(
        g,
        rng,
        pool,
        _harmony(su, prog),
        density=0.2,
        positions=tuple(range(0, 16, 2)),
        legato=0.95,
        loud=122,
        longest_beats=3.0,
    )
    return [drums, bass, pad, lead], "chopped amen break drums"


JUNGLE = StyleSpec(
    name="jungle",
    tempo=(150, 168),
    meters=(4,),
    modes=("minor",),
    leads=JUNGLE_LEADS,
    moods=("dark", "energetic", "tense", "dreamy"),
    description="fast chopped breakbeats with ghost snares, ride and snare runs, a slow sub bass "
    "and long pads underneath, electric piano, alto sax, flute, saw or vibraphone lead",
    make=make_jungle,
)


# --- lo-fi hip hop ----------------------------------------------------------------------------------------

LOFI_LEADS = (11, 73, 24, 59, 12)
LOFI_PROGS = {
    "major": ((1, 4, 0, 5), (0, 5, 1, 4), (3, 2, 1, 0)),
    "minor": ((0, 3, 0, 3), (5, 4, 0, 0), (3, 4, 0, 5)),
}
LOFI_COMPS = (((0, 14),), ((0, 7), (10, 5)), ((0, 5), (6, 2), (10, 5)))
LOFI_BASS = (((0, 6, 0), (10, 4, 0)), ((0, 6, 0), (10, 2, 7), (14, 2, 12)))


def make_lofi(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid(swing=0.4)
    prog = rng.choice(LOFI_PROGS[su.mode])
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 104) for s in rng.choice(((0, 10), (0, 7, 10), (0, 3, 10)))]
    groove += [(4, SIDE_STICK, 100), (12, SIDE_STICK, 100)] + [(s, HAT, 54) for s in range(0, 16, 2)]
    groove += [(7, HAT, 34), (15, HAT, 34)]
    bass = Part("bass", rng.choice((32, 33, 35)))
    line = rng.choice(LOFI_BASS)
    lead = Part("lead", rng.choice(LOFI_LEADS))
    keys = Part("chords", rng.choice([p for p in (4, 0, 24) if p != lead.program]))
    rhythm = rng.choice(LOFI_COMPS)
    size = rng.choice((4, 5))  # sevenths or ninths
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        root = bass_root(su, prog[b % 4])
        for s, n, off in line:
            bass.notes.append(Note(g.t(b, s), n * g.step * 0.95, root + off, vel(rng, 100, 6)))
        tones = chord(su.key, su.mode, prog[b % 4], 3, size, dominant=True)
        prev = voice(tones[1:] if size == 5 else tones, 50, 72, prev)  # the bass has the root
        comp(keys, g, b, prev, rhythm, rng, 84)
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program, 15))
    lead.notes = phrases(g, rng, pool, _harmony(su, prog, 4), density=0.22, positions=tuple(range(0, 16, 2)))
    return [drums, bass, keys, lead], "lazy swung drums with rimshots"


LOFI = StyleSpec(
    name="lofi",
    tempo=(68, 88),
    meters=(4,),
    modes=("major", "minor"),
    leads=LOFI_LEADS,
    moods=("laid-back", "nostalgic", "dreamy", "melancholic", "peaceful", "warm"),
    description="slow, heavily swung drums with rimshots, upright or fretless bass, electric "
    "piano or nylon guitar seventh and ninth chords on ii-V-I turns, vibraphone, flute, guitar, muted "
    "trumpet or marimba lead",
    make=make_lofi,
)
