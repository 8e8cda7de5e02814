"""What the styles share: a style's declaration, the bar grid, scales, voicings and a phrase writer.

A style's `make` gets the piece's draws (`Setup`) and its `random.Random`, and returns its parts and the
words for its groove; the registry turns them into a `Piece`. Every random choice goes through that one
`random.Random`, so a piece stays a pure function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..music import Note, Part, scale_pitch
from ..solo import SOLO_FAMILIES

# GM drum keys the further styles use beyond music.py's
BASS_DRUM, SIDE_STICK, E_SNARE, PEDAL_HAT = 35, 37, 40, 44
FLOOR_TOM, MID_TOM, HIGH_TOM, RIDE_BELL, TAMBOURINE = 41, 47, 50, 53, 54
CABASA, SHAKER = 69, 70
HATS = frozenset({42, 44, 46})  # the keys a groove may ornament bar by bar (rolls, opens)

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "major_penta": (0, 2, 4, 7, 9),
    "minor_penta": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}

# (lowest, highest) pitch each lead program is played in: the solo melodies' ranges plus the styles' own
LEAD_RANGES: dict[int, tuple[int, int]] = {
    **{prog: rng for fam in SOLO_FAMILIES.values() for prog, rng in fam.items()},
    7: (48, 84),
    10: (60, 96),
    12: (48, 84),
    22: (60, 84),
    26: (48, 84),
    59: (55, 82),
    62: (48, 84),
}


@dataclass(frozen=True)
class Setup:
    """The draws every piece starts from."""

    bpm: float
    key: int
    mode: str  # major | minor
    beats_per_bar: int
    seconds: float

    def grid(self, steps_per_beat: int = 4, swing: float = 0.0) -> Grid:
        return Grid(self.bpm, self.beats_per_bar, steps_per_beat, swing, self.seconds)


@dataclass(frozen=True)
class Grid:
    """Bars of equal steps: 4 a beat for straight sixteenths, 3 for swung triplets. `swing` delays every odd
    step by that share of a step (a lazy sixteenth feel)."""

    bpm: float
    beats_per_bar: int
    steps_per_beat: int
    swing: float
    seconds: float

    @property
    def beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def step(self) -> float:
        return self.beat / self.steps_per_beat

    @property
    def steps(self) -> int:
        return self.beats_per_bar * self.steps_per_beat

    @property
    def bar(self) -> float:
        return self.beats_per_bar * self.beat

    @property
    def n_bars(self) -> int:
        return int(self.seconds / self.bar) + 2

    def t(self, bar: int, step: float) -> float:
        """Seconds at a step of a bar (steps past the bar run on into the next)."""
        late = self.swing * self.step if int(step) % 2 and step == int(step) else 0.0
        return bar * self.bar + step * self.step + late


@dataclass(frozen=True)
class StyleSpec:
    """A style the renderer knows: its tempo range, meters (a repeated entry is drawn more often), modes,
    lead programs, moods and a line for people, and the function that writes its parts."""

    name: str
    tempo: tuple[int, int]
    meters: tuple[int, ...]
    modes: tuple[str, ...]
    leads: tuple[int, ...]
    moods: tuple[str, ...]
    description: str
    make: Callable[[Setup, random.Random], tuple[list[Part], str]]


def bass_root(su: Setup, degree: int, top: int = 47) -> int:
    """The root of the chord on a scale degree in the bass register, the octave from `top` - 11 to `top`."""
    p = scale_pitch(su.key, su.mode, degree, 2)
    return p - 12 * ((p - top + 11) // 12)


def vel(rng: random.Random, v: int, spread: int = 8) -> int:
    return max(1, min(127, v + rng.randint(-spread, spread)))


def hits(part: Part, g: Grid, bar: int, pattern, rng: random.Random, dur_steps: float = 1.0) -> None:
    """A bar of (step, pitch, velocity) hits, velocities humanised."""
    for s, p, v in pattern:
        part.notes.append(Note(g.t(bar, s), dur_steps * g.step, p, vel(rng, v)))


def riff(part: Part, g: Grid, bar: int, root: int, pattern, rng: random.Random, v: int = 105) -> None:
    """A bar of (step, length in steps, semitones above `root`) notes: bass lines and riffs."""
    for s, n, off in pattern:
        part.notes.append(Note(g.t(bar, s), n * g.step * 0.95, root + off, vel(rng, v, 6)))


def comp(part: Part, g: Grid, bar: int, pitches: list[int], pattern, rng: random.Random, v: int = 80) -> None:
    """A chord struck at each (step, length in steps), strummed a few milliseconds low to high."""
    for s, n in pattern:
        for i, p in enumerate(sorted(pitches)):
            part.notes.append(Note(g.t(bar, s) + 0.004 * i, n * g.step * 0.95, p, vel(rng, v, 6)))


def scale_notes(key: int, scale: str, low: int, high: int) -> list[int]:
    steps = SCALES[scale]
    return [p for p in range(low, high + 1) if (p - key) % 12 in steps]


def voice(pitches: list[int], low: int, high: int, prev: list[int] | None = None) -> list[int]:
    """The chord's pitch classes stacked closely in [low, high], in the inversion nearest the previous
    voicing, so inner voices move little from chord to chord."""
    pcs = list(dict.fromkeys(p % 12 for p in pitches))
    options = []
    for r in range(len(pcs)):
        order = pcs[r:] + pcs[:r]
        base = low + (order[0] - low) % 12
        notes = [base]
        for pc in order[1:]:
            notes.append(notes[-1] + (pc - notes[-1]) % 12)
        if notes[-1] <= high:
            options.append(notes)
    if not options:
        options = [[low + (pc - low) % 12 for pc in pcs]]
    if prev is None or len(prev) != len(pcs):
        centre = (low + high) / 2
        return min(options, key=lambda v: abs(sum(v) / len(v) - centre))
    return min(options, key=lambda v: sum(abs(a - b) for a, b in zip(v, sorted(prev))))


def lead_range(program: int, span: int = 19) -> tuple[int, int]:
    """A window of `span` semitones in the upper middle of the program's range, where a tune sits."""
    low, high = LEAD_RANGES[program]
    top = min(high, low + max(span, int(0.75 * (high - low))))
    return max(low, top - span), top


def phrases(
    g: Grid,
    rng: random.Random,
    pool: list[int],
    chord_at: Callable[[int], list[int]],
    *,
    density: float = 0.35,
    phrase_bars: int = 2,
    positions: tuple[int, ...] | None = None,
    legato: float = 0.9,
    rest_every: int = 0,
    longest_beats: float = 2.0,
    loud: int = 112,
) -> list[Note]:
    """A tune in phrases: A A' A B over and over (A' re-draws A's ending, B is new), each placed from the
    chord under its first note, with notes on a downbeat drawn to the nearest chord tone. `positions` are
    the steps of a bar a note may start on; every phrase starts on its first bar's downbeat. With
    `rest_every` k, every k-th phrase is left silent (call and response)."""
    spb = g.steps_per_beat
    allowed = positions if positions is not None else tuple(range(g.steps))
    slots = [b * g.steps + s for b in range(phrase_bars) for s in allowed if b or s]
    weight = {0: 4.0}

    def rhythm() -> list[int]:
        want = max(1, round(density * len(slots)))
        pool_w = [weight.get(s % spb, 2.0 if (2 * (s % spb)) % spb == 0 else 1.0) for s in slots]
        picked: set[int] = set()
        while len(picked) < min(want, len(slots)):
            picked.add(rng.choices(slots, pool_w)[0])
        return [0, *sorted(picked)]

    def contour(n: int) -> list[int]:
        return [0] + [rng.choice((-2, -1, -1, -1, 1, 1, 1, 2, 0, 3, -3, 4, -2)) for _ in range(n - 1)]

    a_r, b_r = rhythm(), rhythm()
    a_c = contour(len(a_r))
    half = max(1, len(a_c) // 2)
    a2_c = a_c[:half] + contour(len(a_c) - half + 1)[1:]
    shapes = [(a_r, a_c), (a_r, a2_c), (a_r, a_c), (b_r, contour(len(b_r)))]
    notes: list[Note] = []
    end = phrase_bars * g.steps
    for p in range(g.n_bars // phrase_bars + 1):
        if rest_every and p % rest_every == rest_every - 1:
            continue
        r, c = shapes[p % 4]
        bar0 = p * phrase_bars
        tones = {t % 12 for t in chord_at(bar0)}
        mid = len(pool) // 2
        i = min(
            (j for j in range(len(pool)) if pool[j] % 12 in tones), key=lambda j: abs(j - mid), default=mid
        )
        for k, (s, step) in enumerate(zip(r, c)):
            i = i + step
            if i < 0 or i >= len(pool):  # turn back at the edge of the range
                i = min(max(i - 2 * step, 0), len(pool) - 1)
            bar, pos = bar0 + s // g.steps, s % g.steps
            if pos == 0 and k:
                tones = {t % 12 for t in chord_at(bar)}
                near = [j for j in range(max(0, i - 2), min(len(pool), i + 3)) if pool[j] % 12 in tones]
                i = min(near, key=lambda j: abs(j - i)) if near else i
            nxt = r[k + 1] if k + 1 < len(r) else end
            length = min((nxt - s) * g.step * legato, longest_beats * g.beat)
            notes.append(Note(g.t(bar, pos), length, pool[i], vel(rng, loud - (0 if pos % spb == 0 else 10))))
    return notes
