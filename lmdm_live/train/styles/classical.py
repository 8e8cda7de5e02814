"""Concert music without a drum kit's groove: the orchestra, the solo piano and the string quartet."""

from __future__ import annotations

import random

from ..music import CRASH, DRUMS, PROGRESSIONS, Note, Part, chord
from .kit import BASS_DRUM, Setup, StyleSpec, bass_root, comp, lead_range, phrases, scale_notes, vel, voice


def _harmony(su: Setup, prog: tuple[int, ...], octave: int = 4):
    """Chord per bar, the minor mode's V a major (dominant) chord, as in common-practice harmony."""
    return lambda b: chord(su.key, su.mode, prog[b % len(prog)], octave, 3, dominant=prog[b % len(prog)] == 4)


# --- orchestral -------------------------------------------------------------------------------------------

ORCHESTRAL_LEADS = (60, 56, 40, 73, 68, 71)


def make_orchestral(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(PROGRESSIONS[su.mode])
    harmony = _harmony(su, prog)
    lead = Part("lead", rng.choice(ORCHESTRAL_LEADS))
    strings = Part("chords", rng.choice((48, 44, 49) if su.bpm < 96 else (48, 48, 44)))
    low = Part("bass", rng.choice((43, 42)))
    brass = Part("chords", 61 if lead.program in (60, 56) else rng.choice((60, 61)))
    timpani = Part("drums", 47)
    kit = Part("drums", DRUMS)
    driving = su.bpm >= 96  # a quick tempo gets a string ostinato, a slow one sustained chords
    prev = None
    half = g.steps // 2 if su.beats_per_bar == 4 else g.steps
    for b in range(g.n_bars):
        degree = prog[b % 4]
        prev = voice(harmony(b), 52, 76, prev)
        rhythm = [(s, 1.9) for s in range(0, g.steps, 2)] if driving else [(0, g.steps)]
        comp(strings, g, b, prev, rhythm, rng, 74)
        root = bass_root(su, degree)
        for s in range(0, g.steps, half):
            low.notes.append(Note(g.t(b, s), half * g.step * 0.97, root, vel(rng, 92, 6)))
        if b % 2 == 0:
            comp(brass, g, b, voice(harmony(b), 55, 72), [(0, half)], rng, 70)
        drum = bass_root(su, degree, 52)
        timpani.notes.append(Note(g.t(b, 0), g.beat, drum, vel(rng, 104, 6)))
        if b % 4 == 3:  # a timpani roll swelling into the next phrase
            for s in range(g.steps - 4, g.steps):
                timpani.notes.append(Note(g.t(b, s), g.step, drum, 64 + 12 * (s - g.steps + 4)))
        if b % 4 == 0:
            kit.notes += [
                Note(g.t(b, 0), g.beat, BASS_DRUM, vel(rng, 96)),
                Note(g.t(b, 0), g.bar, CRASH, vel(rng, 70)),
            ]
    pool = scale_notes(su.key, su.mode, *lead_range(lead.program))
    lead.notes = phrases(
        g,
        rng,
        pool,
        harmony,
        density=0.2,
        positions=tuple(range(0, g.steps, 2)),
        legato=0.97,
        longest_beats=4.0,
        loud=104,
    )
    return [timpani, kit, low, strings, brass, lead], "orchestral drums with timpani rolls"


ORCHESTRAL = StyleSpec(
    name="orchestral",
    tempo=(64, 120),
    meters=(4, 4, 3),
    modes=("major", "minor"),
    leads=ORCHESTRAL_LEADS,
    moods=("triumphant", "solemn", "tense", "uplifting", "melancholic", "peaceful", "dark"),
    description="string ensemble (sustained or a driving ostinato), contrabass or cello roots, "
    "brass chords, timpani with rolls and cymbals, a lyrical french horn, trumpet, violin, flute, oboe or "
    "clarinet line",
    make=make_orchestral,
)


# --- solo piano -------------------------------------------------------------------------------------------

PIANO_LEADS = (0, 1)


def _left_hand(su: Setup, g, degree: int, style: str, b: int, rng: random.Random) -> list[Note]:
    """One bar of the left hand: Alberti figures, a rolling arpeggio, stride, or a waltz's bass and chords."""
    tones = chord(su.key, su.mode, degree, 3, 3, dominant=degree == 4)
    root = bass_root(su, degree, 50)
    third, fifth = tones[1] - tones[0], tones[2] - tones[0]
    if style == "alberti":  # low, high, middle, high of the chord in close position
        low = root + 12
        cycle = [low, low + fifth, low + third, low + fifth]
        figure = [(s, 2, cycle[k % 4]) for k, s in enumerate(range(0, g.steps, 2))]
    elif style == "arpeggio":
        up = [root, root + fifth, root + 12, root + 12 + third, root + 12 + fifth, root + 12 + third]
        figure = [(s, 2, up[k % len(up)]) for k, s in enumerate(range(0, g.steps, 2))]
    else:  # stride or waltz: the bass note on the downbeat, the chord on the other beats
        chord_notes = voice(tones, 52, 67)
        figure = [(0, 4, root)]
        if style == "stride":
            figure.append((8, 4, root + fifth if root + fifth <= 52 else root + fifth - 12))
        beats = (4, 12) if style == "stride" else range(4, g.steps, 4)
        figure += [(s, 3, p) for s in beats for p in chord_notes]
    return [Note(g.t(b, s), n * g.step * 0.95, p, vel(rng, 70 if s == 0 else 60, 6)) for s, n, p in figure]


def make_solo_piano(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(PROGRESSIONS[su.mode])
    harmony = _harmony(su, prog)
    program = rng.choice(PIANO_LEADS)
    if su.beats_per_bar == 3:
        style = rng.choice(("waltz", "waltz", "arpeggio"))
    else:
        style = rng.choice(("alberti", "arpeggio", "stride" if su.bpm >= 90 else "arpeggio"))
    left = Part("chords", program)
    for b in range(g.n_bars):
        left.notes += _left_hand(su, g, prog[b % 4], style, b, rng)
    right = Part("lead", program)
    pool = scale_notes(su.key, su.mode, 62, 86)
    right.notes = phrases(g, rng, pool, harmony, density=0.35, legato=0.92, loud=104)
    return [left, right], ""


SOLO_PIANO = StyleSpec(
    name="solo_piano",
    tempo=(60, 112),
    meters=(4, 4, 3),
    modes=("major", "minor"),
    leads=PIANO_LEADS,
    moods=("peaceful", "melancholic", "dreamy", "nostalgic", "uplifting", "playful"),
    description="a right-hand melody over Alberti figures, rolling arpeggios, stride or a waltz "
    "left hand, grand or bright piano, no drums",
    make=make_solo_piano,
)


# --- string quartet ---------------------------------------------------------------------------------------


def make_string_quartet(su: Setup, rng: random.Random) -> tuple[list[Part], str]:
    g = su.grid()
    prog = rng.choice(PROGRESSIONS[su.mode])
    harmony = _harmony(su, prog)
    cello = Part("bass", 42)
    viola = Part("chords", 41)
    second = Part("chords", 40)
    first = Part("lead", 40)
    if su.beats_per_bar == 3:  # a minuet: the cello on one, the inner voices on two and three
        low_rhythm, inner = [(0, 4)], [(4, 4), (8, 4)]
    else:
        low_rhythm = rng.choice(([(0, 8), (8, 8)], [(s, 4) for s in (0, 4, 8, 12)]))
        inner = rng.choice(([(0, 16)], [(s, 2) for s in range(0, 16, 2)], [(0, 8), (8, 8)]))
    prev = None
    for b in range(g.n_bars):
        tones = harmony(b)
        root = bass_root(su, prog[b % 4], 50)
        for k, (s, n) in enumerate(low_rhythm):
            pitch = root + 7 if k % 2 and len(low_rhythm) > 2 else root  # root and fifth in quarters
            cello.notes.append(Note(g.t(b, s), n * g.step * 0.95, pitch, vel(rng, 84, 6)))
        prev = voice(tones, 53, 74, prev)
        for part, pitch in ((viola, prev[0]), (second, prev[-1])):
            part.notes += [Note(g.t(b, s), n * g.step * 0.95, pitch, vel(rng, 70, 6)) for s, n in inner]
    pool = scale_notes(su.key, su.mode, *lead_range(40))
    first.notes = phrases(g, rng, pool, harmony, density=0.3, legato=0.95, longest_beats=3.0, loud=104)
    return [cello, viola, second, first], ""


STRING_QUARTET = StyleSpec(
    name="string_quartet",
    tempo=(60, 132),
    meters=(4, 4, 3),
    modes=("major", "minor"),
    leads=(40,),
    moods=("melancholic", "peaceful", "tense", "solemn", "playful", "uplifting", "warm"),
    description="first violin melody, second violin and viola inner voices (sustained, "
    "pulsing eighths or a minuet's beats two and three), cello roots, no drums",
    make=make_string_quartet,
)
