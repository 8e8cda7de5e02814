"""Solo melodies for every General MIDI lead family, across each instrument's range.

The codec has to keep a melody's pitch on every lead sound a prompt may name, so its training data plays
each family alone: pipes, strings, brass, reeds, pianos, organs, guitars and synth leads. A melody is a
random walk over a scale within about two octaves placed anywhere in the instrument's range, with
phrases, rests and leaps, so both the register and the interval material vary. A piece is a pure function
of its `random.Random`.
"""

from __future__ import annotations

import random

from .music import PROGRAMS, Note, Part, Piece, scale_pitch, tempo_word

# family -> {program: (lowest, highest) MIDI pitch it is played in}
SOLO_FAMILIES: dict[str, dict[int, tuple[int, int]]] = {
    "pipe": {72: (74, 100), 73: (60, 96), 74: (60, 91), 75: (60, 93), 78: (67, 96)},
    "strings": {40: (55, 96), 41: (48, 84), 42: (36, 76), 43: (28, 60)},
    "brass": {56: (54, 84), 57: (40, 72), 58: (30, 60), 60: (41, 77)},
    "reed": {64: (56, 87), 65: (49, 81), 66: (44, 76), 68: (58, 91), 70: (34, 72), 71: (50, 91)},
    "piano": {0: (33, 100), 1: (33, 100), 4: (36, 96), 11: (53, 89)},
    "organ": {16: (36, 96), 19: (36, 96), 21: (53, 89)},
    "guitar": {24: (40, 83), 25: (40, 83), 27: (40, 86), 29: (40, 86)},
    "synth_lead": {80: (36, 96), 81: (36, 96), 82: (48, 96), 84: (36, 88), 87: (36, 84)},
}
SOLO_FAMILY_ORDER = tuple(SOLO_FAMILIES)
SOLO_TEMPO = (60, 150)


def solo_piece(family: str, rng: random.Random, seconds: float) -> Piece:
    """One lead instrument of `family` playing a phrased melody, no accompaniment."""
    program = rng.choice(sorted(SOLO_FAMILIES[family]))
    low, high = SOLO_FAMILIES[family][program]
    bpm = float(rng.randint(*SOLO_TEMPO))
    mode = rng.choice(("major", "minor"))
    key = rng.randrange(12)
    beat = 60.0 / bpm
    # a two-octave window anywhere in the range (the whole range when it is narrower)
    span = min(24, high - low)
    base = rng.randint(low, high - span)
    degrees = [d for d in range(-14, 36) if base <= scale_pitch(key, mode, d, 3) <= base + span]
    legato = 0.97 if family in ("strings", "brass", "reed", "pipe", "organ", "synth_lead") else 0.85
    notes: list[Note] = []
    t, i = 0.0, rng.randrange(len(degrees))
    while t < seconds:
        phrase = rng.randint(4, 10)
        for _ in range(phrase):
            step = rng.choice((-2, -1, -1, 1, 1, 2, 0, 3, -3, 4, -4, 7, -7))
            i = min(max(i + step, 0), len(degrees) - 1)
            dur = rng.choice((0.25, 0.5, 0.5, 1.0, 1.0, 1.5, 2.0)) * beat
            pitch = scale_pitch(key, mode, degrees[i], 3)
            notes.append(Note(t, dur * legato, pitch, rng.randint(70, 115)))
            t += dur
        t += rng.choice((0.0, 0.5, 1.0)) * beat  # breath between phrases
    lead = Part("lead", program, notes)
    return Piece("solo", bpm, key, mode, 4, seconds, [lead], family, "", f"solo:{program}")


def solo_piece_caption(piece: Piece) -> str:
    word = PROGRAMS[piece.parts[0].program][1]
    return f"{tempo_word(piece.bpm)} solo {word} melody, no drums, in {piece.key_name} {piece.mode}, {round(piece.bpm)} bpm"
