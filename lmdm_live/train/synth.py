"""Render a `Piece` to one audio stem per part with FluidSynth and a General MIDI soundfont.

Each stem is rendered on its own synth, so the stems are independent signals and the mix is exactly their
sum. Event times are placed to the sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .music import DRUMS, Part, Piece

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)


def find_soundfont(path: str | Path | None = None) -> Path:
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"soundfont not found: {p}")
        return p
    for c in SOUNDFONT_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    raise FileNotFoundError(
        "no General MIDI soundfont found: install fluid-soundfont-gm (scripts/setup.sh does) or pass --soundfont"
    )


class StemSynth:
    """One FluidSynth instance with the soundfont loaded once; renders a part at a time."""

    def __init__(self, sample_rate: int, soundfont: str | Path | None = None, reverb: bool = True) -> None:
        self.sample_rate = int(sample_rate)
        self.soundfont = str(find_soundfont(soundfont))
        self.reverb = reverb
        self.fs = None

    def _fresh(self) -> None:
        """A new synth per part: reverb and voice state never leak from one stem or example into the next,
        so a piece renders the same whatever was rendered before it."""
        import fluidsynth

        self.close()
        self.fs = fluidsynth.Synth(gain=0.6, samplerate=float(self.sample_rate))
        self.fs.setting("synth.chorus.active", 0)
        self.fs.setting("synth.reverb.active", 1 if self.reverb else 0)
        self.sfid = self.fs.sfload(self.soundfont)
        if self.sfid < 0:
            raise RuntimeError(f"FluidSynth could not load the soundfont {self.soundfont}")

    def render(self, part: Part, n_samples: int) -> np.ndarray:
        """The part as mono float32 of exactly `n_samples` (notes past the end are cut, tails rendered)."""
        self._fresh()
        fs, sr = self.fs, self.sample_rate
        chan = 9 if part.program == DRUMS else 0
        fs.program_select(
            chan, self.sfid, 128 if part.program == DRUMS else 0, 0 if part.program == DRUMS else part.program
        )
        events: list[tuple[int, int, int, int]] = []  # (sample, order, pitch, vel): note-offs before note-ons
        for n in part.notes:
            on = int(round(n.start * sr))
            if on >= n_samples or not 0 <= n.pitch < 128:
                continue
            events.append((on, 1, n.pitch, n.vel))
            events.append((min(int(round((n.start + n.dur) * sr)), n_samples), 0, n.pitch, 0))
        events.sort()
        out = np.zeros(n_samples, np.float32)
        pos = 0
        for t, is_on, pitch, vel in events:
            if t > pos:
                out[pos:t] = self._pull(t - pos)
                pos = t
            if is_on:
                fs.noteon(chan, pitch, vel)
            else:
                fs.noteoff(chan, pitch)
        if pos < n_samples:
            out[pos:] = self._pull(n_samples - pos)
        fs.all_sounds_off(chan)
        return out

    def _pull(self, n: int) -> np.ndarray:
        s = np.asarray(self.fs.get_samples(n), dtype=np.float32).reshape(-1, 2)
        return s.mean(axis=1) / 32768.0

    def close(self) -> None:
        if self.fs is not None:
            self.fs.delete()
            self.fs = None


def render_piece(synth: StemSynth, piece: Piece) -> dict[str, np.ndarray]:
    """{stem: audio}; parts sharing a stem name are summed into it."""
    n = int(round(piece.seconds * synth.sample_rate))
    stems: dict[str, np.ndarray] = {}
    for part in piece.parts:
        audio = synth.render(part, n)
        stems[part.stem] = stems[part.stem] + audio if part.stem in stems else audio
    return stems
