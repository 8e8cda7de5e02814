"""Seventh-chord harmony: a swinging jazz combo (in four or as a waltz) and bossa nova."""

from __future__ import annotations

import random

from ..music import DRUMS, HAT, KICK, RIDE, SNARE, Note, Part, chord
from .kit import (
    PEDAL_HAT,
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

# a chord a bar, as scale degrees: ii-V-I turns and their relatives
JAZZ_PROGS = {
    "major": ((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (0, 3, 1, 4)),
    "minor": ((1, 4, 0, 0), (0, 3, 1, 4), (0, 5, 1, 4)),
}


def _sevenths(su: Setup, prog: tuple[int, ...], octave: int = 3, size: int = 4):
    return lambda b: chord(
        su.key, su.mode, prog[b % len(prog)], octave, size, dominant=prog[b % len(prog)] == 4
    )


# --- jazz -------------------------------------------------------------------------------------------------

JAZZ_LEADS = (0, 11, 66, 56, 26, 71)
# ride patterns on a triplet grid (3 steps a beat): "ding, ding-a-ding" with the hi-hat foot on 2 and 4
JAZZ_RIDE = {
    4: [(0, RIDE, 104), (3, RIDE, 100), (5, RIDE, 80), (6, RIDE, 104), (9, RIDE, 100), (11, RIDE, 80)]
    + [(3, PEDAL_HAT, 78), (9, PEDAL_HAT, 78)]
    + [(s, KICK, 34) for s in (0, 3, 6, 9)],
    3: [(0, RIDE, 104), (3, RIDE, 98), (5, RIDE, 80), (6, RIDE, 98)]
    + [(3, PEDAL_HAT, 74), (6, PEDAL_HAT, 74), (0, KICK, 40)],
}
JAZZ_FILLS = {
    4: [(8, SNARE, 70), (10, SNARE, 82), (11, SNARE, 94)],
    3: [(5, SNARE, 70), (7, SNARE, 84), (8, SNARE, 94)],
}
JAZZ_COMPS = {  # piano comping rhythms on the triplet grid, (step, steps long)
    4: (((0, 2), (5, 2)), ((5, 1), (11, 2)), ((2, 1), (8, 3)), ((0, 4),)),
    3: (((3, 2), (6, 2)), ((0, 2), (5, 2)), ((2, 1), (6, 3))),
}


def _walk(su: Setup, g, prog: tuple[int, ...], rng: random.Random) -> list[Note]:
    """A walking bass: the root on the downbeat, chord tones between, and a half or whole step into the
    next bar's root on the last beat."""
    notes: list[Note] = []
    for b in range(g.n_bars):
        degree = prog[b % len(prog)]
        root, nxt = bass_root(su, degree, 45), bass_root(su, prog[(b + 1) % len(prog)], 45)
        c = chord(su.key, su.mode, degree, 2, 4, dominant=degree == 4)
        tones = [root + t - c[0] for t in c[1:]]  # third, fifth and seventh above the bass root
        line = [root]
        for _ in range(g.beats_per_bar - 2):
            near = [
                t + o for t in tones for o in (-12, 0, 12) if 0 < abs(t + o - line[-1]) <= 7 and t + o >= 31
            ]
            line.append(rng.choice(near) if near else line[-1] + 2)
        line.append(nxt + rng.choice((-1, 1, 2)))
        for k, p in enumerate(line):
            notes.append(
                Note(g.t(b, k * g.steps_per_beat), g.beat * 0.9, p, vel(rng, 96 if k == 0 else 88, 6))
            )
    return notes


def make_jazz(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid(steps_per_beat=3)  # swung eighths fall on the triplet grid
    prog = rng.choice(JAZZ_PROGS[su.mode])
    chords_at = _sevenths(su, prog)
    drums = Part("drums", DRUMS)
    bass = Part("bass", 32)
    piano = Part("chords", 0)
    lead = Part("lead", rng.choice(JAZZ_LEADS))
    meter = su.beats_per_bar
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, JAZZ_RIDE[meter], rng)
        if b % 4 == 3:
            hits(drums, g, b, JAZZ_FILLS[meter], rng)
        rootless = chord(su.key, su.mode, prog[b % 4], 3, 5, dominant=prog[b % 4] == 4)[1:]  # 3, 5, 7, 9
        prev = voice(rootless, 50, 70, prev)
        comp(piano, g, b, prev, rng.choice(JAZZ_COMPS[meter]), rng, 68)
    bass.notes = _walk(su, g, prog, rng)
    pool = scale_notes(su.key, "major" if su.mode == "major" else "dorian", *lead_range(lead.program))
    swung = tuple(s for s in range(g.steps) if s % 3 != 1)
    lead.notes = phrases(g, rng, pool, chords_at, density=0.45, positions=swung, legato=0.85)
    words = "jazz waltz drums on the ride cymbal" if meter == 3 else "swing drums on the ride cymbal"
    return [drums, bass, piano, lead], words


JAZZ = StyleSpec(
    name="jazz",
    tempo=(100, 180),
    meters=(4, 4, 3),
    modes=("major", "major", "minor"),
    leads=JAZZ_LEADS,
    moods=("laid-back", "warm", "playful", "melancholic", "energetic", "nostalgic"),
    description="swung ride cymbal with the hi-hat on two and four (or a 3/4 jazz "
    "waltz), walking upright bass, rootless piano voicings on ii-V-I turns, piano, vibraphone, tenor sax, "
    "trumpet, jazz guitar or clarinet lead",
    make=make_jazz,
)


# --- bossa nova -------------------------------------------------------------------------------------------

BOSSA_LEADS = (73, 66, 11, 71, 64)
BOSSA_PROGS = {
    "major": ((0, 0, 1, 4), (0, 5, 1, 4), (0, 3, 1, 4), (1, 4, 0, 0)),
    "minor": ((0, 3, 1, 4), (0, 0, 3, 4)),
}
BOSSA_DRUMS = (
    [(s, SIDE_STICK, 74) for s in (0, 3, 6, 10, 13)]  # the bossa clave on the rim
    + [(0, KICK, 92), (6, KICK, 58), (8, KICK, 92), (14, KICK, 58)]  # the surdo-like kick
    + [(s, HAT, (76, 34, 52, 34)[s % 4]) for s in range(16)]  # sixteenths, accented on the beat
)
BOSSA_GUITAR = (((0, 2), (3, 2), (6, 2), (10, 2), (12, 2)), ((2, 2), (6, 2), (8, 2), (11, 2), (14, 2)))


def make_bossa(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(BOSSA_PROGS[su.mode])
    chords_at = _sevenths(su, prog, 4)
    drums = Part("drums", DRUMS)
    bass = Part("bass", rng.choice((32, 33)))
    guitar = Part("chords", 24)
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, BOSSA_DRUMS, rng)
        degree = prog[b % 4]
        root = bass_root(su, degree, 45)
        tones = chord(su.key, su.mode, degree, 3, 5, dominant=degree == 4)
        fifth = root + tones[2] - tones[0]
        for s, n, p in ((0, 5, root), (6, 2, fifth), (8, 5, fifth), (14, 2, root)):
            bass.notes.append(Note(g.t(b, s), n * g.step * 0.95, p, vel(rng, 96, 6)))
        prev = voice([tones[1], tones[3], tones[4], tones[2]], 52, 70, prev)  # third, seventh, ninth, fifth
        comp(guitar, g, b, prev, BOSSA_GUITAR[b % 2], rng, 72)  # two bars of partido-alto-like comping
    lead = Part("lead", rng.choice(BOSSA_LEADS))
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program))
    tune = phrases(
        g,
        rng,
        pool,
        chords_at,
        density=0.25,
        positions=(0, 2, 3, 4, 6, 8, 10, 11, 12, 14),
        legato=0.95,
        longest_beats=3.0,
    )
    lead.notes = tune
    return [drums, bass, guitar, lead], "bossa nova drums with rim clave"


BOSSA = StyleSpec(
    name="bossa",
    tempo=(116, 144),
    meters=(4,),
    modes=("major", "major", "minor"),
    leads=BOSSA_LEADS,
    moods=("laid-back", "warm", "peaceful", "dreamy", "melancholic", "nostalgic"),
    description="rim-click bossa clave, soft surdo-like kick and sixteenth hats, root-fifth "
    "bass, nylon guitar comping seventh and ninth chords in a syncopated two-bar pattern, flute, tenor or "
    "soprano sax, vibraphone or clarinet lead",
    make=make_bossa,
)
