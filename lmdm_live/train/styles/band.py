"""Band grooves built on the off-beat and the sixteenth: dub, reggae and funk."""

from __future__ import annotations

import random

from ..music import DRUMS, HAT, KICK, LOW_TOM, OPEN_HAT, SNARE, Note, Part, chord, scale_pitch
from .kit import (
    FLOOR_TOM,
    HIGH_TOM,
    MID_TOM,
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


def _line(part: Part, g, bar: int, su: Setup, degree: int, pattern, rng: random.Random, v: int = 105) -> None:
    """A bar of (step, length in steps, scale steps above the chord root) in the bass register."""
    shift = bass_root(su, degree, 45) - scale_pitch(su.key, su.mode, degree, 2)
    for s, n, d in pattern:
        pitch = scale_pitch(su.key, su.mode, degree + d, 2) + shift
        part.notes.append(Note(g.t(bar, s), n * g.step * 0.95, pitch, vel(rng, v, 6)))


def _echo(notes: list[Note], delay: float, repeats: int, decay: float = 0.5) -> list[Note]:
    """The dub delay: each note again after `delay` seconds, softer each time."""
    out = list(notes)
    for k in range(1, repeats + 1):
        out += [Note(n.start + k * delay, n.dur * 0.8, n.pitch, max(1, int(n.vel * decay**k))) for n in notes]
    return out


# --- dub --------------------------------------------------------------------------------------------------

DUB_PROGS = {"minor": ((0, 0, 3, 3), (0, 0, 6, 6), (0, 3, 0, 6)), "major": ((0, 0, 3, 3), (0, 3, 0, 4))}
DUB_LEADS = (22, 56, 57, 16)
DUB_BASS = (  # (step, steps long, scale steps above the root): heavy riffs that leave space
    ((0, 3, 0), (3, 1, 0), (6, 2, 4), (8, 4, 6), (12, 2, 4), (14, 2, 2)),
    ((2, 2, 0), (4, 2, 0), (6, 4, 7), (10, 2, 6), (12, 4, 4)),
    ((0, 6, 0), (6, 2, 2), (8, 2, 3), (10, 6, 4)),
)


def make_dub(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(DUB_PROGS[su.mode])
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 112) for s in (0, 4, 8, 12)] + [(s, HAT, 56) for s in (2, 6, 10, 14)]
    groove += [(8, SIDE_STICK, 115), (8, SNARE, 80), (11, SIDE_STICK, 60), (14, SIDE_STICK, 34)]  # echoed rim
    bass = Part("bass", rng.choice((33, 35)))
    riff = rng.choice(DUB_BASS)
    skank = Part("chords", rng.choice((27, 16, 17)))
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            hits(drums, g, b, [(13, HIGH_TOM, 92), (14, MID_TOM, 88), (15, FLOOR_TOM, 84)], rng)
        degree = prog[b % 4]
        _line(bass, g, b, su, degree, riff, rng, 100)
        prev = voice(chord(su.key, su.mode, degree, 4, 3), 60, 76, prev)
        stabs = Part("chords", skank.program)
        comp(stabs, g, b, prev, [(4, 0.7), (12, 0.7)], rng, 84)
        skank.notes += _echo(stabs.notes, 3 * g.step, 2, 0.55)
    lead = Part("lead", rng.choice(DUB_LEADS))
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program, 17))
    tune = phrases(
        g,
        rng,
        pool,
        lambda b: chord(su.key, su.mode, prog[b % 4], 4, 3),
        density=0.2,
        positions=tuple(range(0, 16, 2)),
        rest_every=2,
        legato=0.85,
        loud=122,
    )
    lead.notes = _echo(tune, 3 * g.step, 2, 0.45)
    return [drums, bass, skank, lead], "steppers drums with echoing rimshots"


DUB = StyleSpec(
    name="dub",
    tempo=(64, 80),
    meters=(4,),
    modes=("minor", "minor", "major"),
    leads=DUB_LEADS,
    moods=("dark", "hypnotic", "laid-back", "melancholic", "dreamy"),
    description="steppers kick on every beat, echoing rimshots and skanks, a heavy bass riff over a one- or "
    "two-chord vamp, melodica-like harmonica, trumpet, trombone or organ lead",
    make=make_dub,
)


# --- reggae -----------------------------------------------------------------------------------------------

REGGAE_PROGS = {"major": ((0, 3, 4, 3), (0, 5, 3, 4), (0, 0, 3, 4)), "minor": ((0, 3, 0, 3), (0, 6, 5, 6))}
REGGAE_BASS = (
    ((0, 3, 0), (4, 2, 0), (6, 2, 2), (8, 3, 4), (12, 2, 2), (14, 2, 1)),
    ((2, 2, 0), (4, 4, 4), (10, 2, 2), (12, 4, 0)),  # drops the one
    ((0, 6, 0), (8, 2, 4), (10, 2, 5), (12, 4, 4)),
)
REGGAE_LEADS = (65, 56, 26, 21, 11)


def make_reggae(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(REGGAE_PROGS[su.mode])
    drums = Part("drums", DRUMS)
    groove = [(8, KICK, 114), (8, SIDE_STICK, 118)] + [
        (s, HAT, 86 if s % 4 == 0 else 66) for s in range(0, 16, 2)
    ]
    groove += [(15, HAT, 40)]
    bass = Part("bass", rng.choice((33, 34, 35)))
    riff = rng.choice(REGGAE_BASS)
    skank = Part("chords", rng.choice((27, 25)))
    bubble = Part("chords", rng.choice((16, 17)))
    high = low = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            hits(
                drums, g, b, [(12, SNARE, 84), (13, SNARE, 72), (14, HIGH_TOM, 92), (15, FLOOR_TOM, 92)], rng
            )
        degree = prog[b % 4]
        _line(bass, g, b, su, degree, riff, rng, 92)
        tones = chord(su.key, su.mode, degree, 4, 3)
        high, low = voice(tones, 62, 79, high), voice(tones, 50, 65, low)
        comp(skank, g, b, high, [(4, 0.8), (12, 0.8)], rng, 88)  # the skank on two and four
        comp(bubble, g, b, low, [(2, 1), (6, 1), (10, 1), (14, 1)], rng, 60)  # the organ bubble
    lead = Part("lead", rng.choice(REGGAE_LEADS))
    pool = scale_notes(
        su.key, "major_penta" if su.mode == "major" else "minor_penta", *lead_range(lead.program)
    )
    lead.notes = phrases(
        g, rng, pool, lambda b: chord(su.key, su.mode, prog[b % 4], 4, 3), density=0.28, loud=118
    )
    return [drums, bass, skank, bubble, lead], "one-drop drums"


REGGAE = StyleSpec(
    name="reggae",
    tempo=(72, 96),
    meters=(4,),
    modes=("major", "major", "minor"),
    leads=REGGAE_LEADS,
    moods=("laid-back", "uplifting", "warm", "peaceful", "melancholic", "playful"),
    description="one-drop drums with the kick on three, guitar skank on two and four over an organ bubble, a "
    "melodic bass that may drop the one, sax, trumpet, jazz guitar, accordion or vibraphone lead",
    make=make_reggae,
)


# --- funk -------------------------------------------------------------------------------------------------

# chord of the vamp as semitones above the key: a minor ninth or a dominant ninth on I, a dominant ninth on IV
FUNK_CHORDS = {
    "minor": ((0, 3, 7, 10, 14), (5, 9, 12, 15, 19)),
    "major": ((0, 4, 7, 10, 14), (5, 9, 12, 15, 19)),
}
FUNK_FORMS = ((0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 0, 1), (0, 0, 0, 0))
FUNK_KICKS = ((0, 3, 10), (0, 6, 10, 11), (0, 7, 10), (0, 3, 8, 10))
FUNK_BASS = (  # (step, steps long, semitones above the chord root): sixteenth riffs with octave pops
    (
        (0, 2, 0),
        (3, 1, 0),
        (4, 1, 12),
        (6, 1, 0),
        (7, 1, 10),
        (10, 2, 0),
        (11, 1, 12),
        (13, 1, 7),
        (14, 2, 10),
    ),
    ((0, 3, 0), (3, 1, 12), (5, 1, 0), (8, 1, 7), (10, 1, 0), (11, 1, 10), (12, 2, 12), (15, 1, -1)),
    (
        (0, 2, 0),
        (2, 1, 12),
        (4, 1, 0),
        (7, 1, 7),
        (8, 2, 0),
        (10, 1, 10),
        (11, 1, 12),
        (13, 1, 7),
        (15, 1, -1),
    ),
)
FUNK_SCRATCH = ((2, 3, 6, 10, 11, 14), (0, 3, 4, 7, 10, 12, 15), (1, 2, 6, 9, 10, 14))
FUNK_LEADS = (66, 56, 7, 81, 27)


def make_funk(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    vamp, form = FUNK_CHORDS[su.mode], rng.choice(FUNK_FORMS)
    drums = Part("drums", DRUMS)
    groove = [(s, KICK, 116) for s in rng.choice(FUNK_KICKS)] + [(4, SNARE, 118), (12, SNARE, 118)]
    groove += [(7, SNARE, 42), (9, SNARE, 48), (15, SNARE, 38)]  # ghost notes
    groove += [(s, HAT, 82 if s % 2 == 0 else 46) for s in range(16) if s != 14] + [(14, OPEN_HAT, 76)]
    bass = Part("bass", rng.choice((36, 33)))
    riff = rng.choice(FUNK_BASS)
    lead = Part("lead", rng.choice(FUNK_LEADS))
    guitar = Part("chords", rng.choice([p for p in (28, 7, 27) if p != lead.program]))
    scratch = rng.choice(FUNK_SCRATCH)
    horns = Part("chords", 61) if rng.random() < 0.6 else None
    prev = None
    for b in range(g.n_bars):
        hits(drums, g, b, groove, rng)
        if b % 4 == 3:
            hits(drums, g, b, [(13, SNARE, 96), (14, LOW_TOM, 100)], rng)
        tones = [su.key + 12 * 3 + x for x in vamp[form[b % 4]]]
        root = tones[0] - 12 if tones[0] - 12 >= 34 else tones[0]
        for s, n, off in riff:
            bass.notes.append(
                Note(g.t(b, s), n * g.step * 0.9, root + off, vel(rng, 112 if off == 12 else 100, 6))
            )
        prev = voice(tones[1:], 55, 74, prev)
        comp(guitar, g, b, prev, [(s, 0.5) for s in scratch], rng, 76)
        if horns is not None and b % 2 == 0:
            comp(horns, g, b, voice(tones[1:4], 60, 76), [(6, 1), (14, 1.5)], rng, 96)
    scale = "blues" if su.mode == "minor" else "mixolydian"
    pool = scale_notes(su.key, scale, *lead_range(lead.program))

    def chords_at(b: int) -> list[int]:
        return [su.key + x for x in vamp[form[b % 4]]]

    lead.notes = phrases(g, rng, pool, chords_at, density=0.3, legato=0.7, phrase_bars=2)
    parts = [drums, bass, guitar] + ([horns] if horns is not None else []) + [lead]
    return parts, "syncopated funk drums with ghost notes"


FUNK = StyleSpec(
    name="funk",
    tempo=(96, 118),
    meters=(4,),
    modes=("minor", "minor", "major"),
    leads=FUNK_LEADS,
    moods=("groovy", "energetic", "playful", "gritty", "warm"),
    description="sixteenth-note drums with ghost snares, slap or finger bass riffs with octave pops, muted-guitar "
    "or clavinet scratches and brass stabs on a ninth-chord vamp, tenor sax, trumpet, clavinet, synth or "
    "guitar lead",
    make=make_funk,
)
