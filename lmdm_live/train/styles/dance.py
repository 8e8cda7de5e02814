"""Machine music on a straight sixteenth grid: acid house, minimal techno, synthwave and chiptune."""

from __future__ import annotations

import random

from ..music import CLAP, CRASH, DRUMS, HAT, KICK, LOW_TOM, OPEN_HAT, PROGRESSIONS, Note, Part, chord
from .kit import (
    E_SNARE,
    FLOOR_TOM,
    HIGH_TOM,
    MID_TOM,
    PEDAL_HAT,
    SHAKER,
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


# --- acid house -------------------------------------------------------------------------------------------

ACID_LEADS = (81, 80, 0, 84)


def _acid_sequence(rng: random.Random) -> list[tuple[int, float, int, int]]:
    """One bar of a 303-style line: (step, steps long, semitones, velocity) with rests, accents, slides and
    octave jumps."""
    seq = []
    for s in range(16):
        if s and rng.random() < 0.3:
            continue
        off = rng.choice((0, 0, 0, 12, 12, 7, 10, 3, 5))
        accent = rng.random() < 0.35
        slide = rng.random() < 0.2
        seq.append((s, 1.6 if slide else 0.6, off, 124 if accent else 84))
    return seq


def make_acid(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(((0, 0, 0, 0), (0, 0, 6, 6), (0, 0, 5, 6), (0, 3, 0, 3)))
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 118) for s in (0, 4, 8, 12)] + [(4, CLAP, 96), (12, CLAP, 96)]
    groove += [(s, HAT, 88 if s % 4 == 2 else 50) for s in range(16)]
    bass = Part("bass", 38)
    seq = _acid_sequence(rng)
    pad = Part("chords", rng.choice((89, 95, 50)))
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            hits(drums, g, b, [(14, CLAP, 80), (15, CLAP, 92)], rng)
        if b % 8 == 0:
            hits(drums, g, b, [(0, CRASH, 86)], rng, 8)
        root = bass_root(su, prog[b % 4])
        for s, n, off, v in seq:
            bass.notes.append(Note(g.t(b, s), n * g.step, root + off, vel(rng, v, 4)))
        prev = voice(chord(su.key, su.mode, prog[b % 4], 4, 4), 55, 72, prev)
        comp(pad, g, b, prev, [(0, 16)], rng, 48)
    lead = Part("lead", rng.choice(ACID_LEADS))
    pool = scale_notes(su.key, "minor", *lead_range(lead.program))
    lead.notes = phrases(g, rng, pool, _harmony(su, prog), density=0.3, phrase_bars=1, legato=0.7, loud=122)
    return [drums, bass, pad, lead], "four-on-the-floor drums with sixteenth hats"


ACID = StyleSpec(
    name="acid",
    tempo=(120, 136),
    meters=(4,),
    modes=("minor",),
    leads=ACID_LEADS,
    moods=("dark", "hypnotic", "energetic", "tense", "gritty"),
    description="909-style four-on-the-floor with sixteenth hats, a squelchy 303-style synth "
    "bass line with accents, slides and octave jumps on a minor vamp, pads, saw, square, charang or piano lead",
    make=make_acid,
)


# --- minimal techno ---------------------------------------------------------------------------------------

MINIMAL_LEADS = (12, 4, 80, 11)
MINIMAL_RIMS = ((3, 11, 14), (6, 13), (3, 10, 14), (7, 10))
MINIMAL_BASS = ((3, 7, 11, 14), (2, 10, 11), (3, 6, 11))


def make_minimal(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(((0, 0, 0, 0), (0, 0, 3, 3), (0, 0, 0, 5)))
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 110) for s in (0, 4, 8, 12)] + [(s, SIDE_STICK, 92) for s in rng.choice(MINIMAL_RIMS)]
    groove += [(s, HAT, 66) for s in (2, 6, 10, 14)] + [
        (s, SHAKER, 58 if s % 2 == 0 else 42) for s in range(16)
    ]
    bass = Part("bass", 39)
    blips = rng.choice(MINIMAL_BASS)
    lead = Part("lead", rng.choice(MINIMAL_LEADS))
    stab = Part("chords", 90 if lead.program == 4 else rng.choice((4, 90)))
    stab_at = rng.choice(((6,), (3, 11), (10,)))
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            hits(drums, g, b, [(15, OPEN_HAT, 70)], rng)
        root = bass_root(su, prog[b % 4])
        for k, s in enumerate(blips):
            bass.notes.append(Note(g.t(b, s), 0.6 * g.step, root + (12 if k == 2 else 0), vel(rng, 104, 6)))
        tones = voice(chord(su.key, su.mode, prog[b % 4], 4, 4), 55, 70)
        for echo, v in ((0, 112), (3, 76), (6, 52)):  # a dub-techno chord stab with its delay
            comp(stab, g, b, tones, [(s + echo, 1.0) for s in stab_at], rng, v)
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program, 14))
    lead.notes = phrases(g, rng, pool, _harmony(su, prog), density=0.18, phrase_bars=1, legato=0.5, loud=118)
    return [drums, bass, stab, lead], "minimal four-on-the-floor drums with rimshots and shaker"


MINIMAL = StyleSpec(
    name="minimal",
    tempo=(120, 128),
    meters=(4,),
    modes=("minor",),
    leads=MINIMAL_LEADS,
    moods=("hypnotic", "dark", "dreamy", "tense"),
    description="a soft four-on-the-floor with off-beat hats, rimshots and a sixteenth "
    "shaker, short sub-bass blips, one echoing chord stab, sparse marimba, electric piano, square or "
    "vibraphone motifs",
    make=make_minimal,
)


# --- synthwave --------------------------------------------------------------------------------------------

SYNTHWAVE_LEADS = (81, 62, 66, 84)
SYNTHWAVE_PROGS = {"minor": ((0, 5, 2, 6), (0, 5, 6, 4), (0, 3, 5, 6)), "major": ((0, 4, 5, 3), (5, 3, 0, 4))}


def make_synthwave(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(SYNTHWAVE_PROGS[su.mode])
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 116) for s in rng.choice(((0, 8), (0, 8, 10), (0, 4, 8, 12)))]
    groove += [(4, E_SNARE, 122), (12, E_SNARE, 122), (4, CLAP, 80), (12, CLAP, 80)]  # the gated snare
    groove += [(s, HAT, 70) for s in range(0, 16, 2)]
    bass = Part("bass", 39)
    octaves = rng.random() < 0.5
    pad = Part("chords", rng.choice((90, 89, 50)))
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            fill = [(12, HIGH_TOM, 104), (13, MID_TOM, 104), (14, LOW_TOM, 108), (15, FLOOR_TOM, 110)]
            hits(drums, g, b, fill, rng)
        if b % 8 == 0:
            hits(drums, g, b, [(0, CRASH, 92)], rng, 8)
        root = bass_root(su, prog[b % 4])
        if octaves:  # eighths jumping the octave
            pattern = [(s, root + (12 if (s // 2) % 2 else 0)) for s in range(0, 16, 2)]
        else:  # a driving sixteenth pulse
            pattern = [(s, root) for s in range(16)]
        for s, p in pattern:
            bass.notes.append(Note(g.t(b, s), (1.7 if octaves else 0.85) * g.step, p, vel(rng, 84, 6)))
        tones = chord(su.key, su.mode, prog[b % 4], 4, 3)
        prev = voice([*tones, tones[0] + 2], 52, 74, prev)  # an added ninth
        comp(pad, g, b, prev, [(0, 16)], rng, 66)
    lead = Part("lead", rng.choice(SYNTHWAVE_LEADS))
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program))
    lead.notes = phrases(g, rng, pool, _harmony(su, prog), density=0.3, legato=0.92, loud=118)
    return [drums, bass, pad, lead], "gated eighties drums"


SYNTHWAVE = StyleSpec(
    name="synthwave",
    tempo=(84, 118),
    meters=(4,),
    modes=("minor", "minor", "major"),
    leads=SYNTHWAVE_LEADS,
    moods=("nostalgic", "dreamy", "energetic", "melancholic", "uplifting"),
    description="eighties drums with a gated snare and tom fills, pulsing eighth or sixteenth "
    "synth bass, polysynth pads with added ninths, saw, synth brass, tenor sax or charang lead",
    make=make_synthwave,
)


# --- chiptune ---------------------------------------------------------------------------------------------

CHIPTUNE_LEADS = (80, 81)


def make_chiptune(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(PROGRESSIONS[su.mode])
    drums = Part("drums", DRUMS)
    groove = [(0, KICK, 108), (6, KICK, 100), (8, KICK, 108), (4, E_SNARE, 104), (12, E_SNARE, 104)]
    groove += [(s, PEDAL_HAT, 72) for s in (2, 6, 10, 14)]
    lead = Part("lead", rng.choice(CHIPTUNE_LEADS))
    bass = Part("bass", 80)
    arp = Part("chords", 81 if lead.program == 80 else 80)
    up_down = rng.random() < 0.5
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            hits(drums, g, b, [(13, E_SNARE, 84), (14, E_SNARE, 92), (15, E_SNARE, 100)], rng)
        root = bass_root(su, prog[b % 4])
        for s, off in zip(range(0, 16, 2), (0, 12, 7, 12, 0, 12, 7, 12)):
            bass.notes.append(Note(g.t(b, s), 0.9 * g.step, root + off, vel(rng, 96, 4)))
        tones = voice(chord(su.key, su.mode, prog[b % 4], 4, 3, dominant=True), 60, 76)
        cycle = [*tones, tones[0] + 12] + ([tones[2], tones[1]] if up_down else [])
        for s in range(16):  # the fast arpeggio that stands in for chords on a sound chip
            arp.notes.append(Note(g.t(b, s), 0.9 * g.step, cycle[s % len(cycle)], vel(rng, 72, 4)))
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program))
    lead.notes = phrases(g, rng, pool, _harmony(su, prog), density=0.45, phrase_bars=2, legato=0.8)
    return [drums, bass, arp, lead], "chiptune drums"


CHIPTUNE = StyleSpec(
    name="chiptune",
    tempo=(132, 172),
    meters=(4,),
    modes=("major", "major", "minor"),
    leads=CHIPTUNE_LEADS,
    moods=("playful", "energetic", "uplifting", "tense", "nostalgic"),
    description="square-wave melodies, sixteenth-note chord arpeggios and an octave-jumping square "
    "bass over tight electronic drums, square or saw lead",
    make=make_chiptune,
)
