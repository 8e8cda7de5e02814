"""Live input on the inference thread: a hummed sketch, a jam partner's audio, and the player's own audio
as the stream's context (the generative delay).

Each mode reads one `AudioInput` (mono, at the model's rate) into a rolling buffer, its `Feed`. When a mode
starts, the feed is tied to the stream's clock: input sample k stands beside stream sample k + offset, the
offset a whole number of latent frames, chosen so that what a block needs has been captured by the time
the block is made. The delay the instrument introduces is the time from capturing input sample k to
hearing stream sample k + offset; `LiveInput.latency()` reports it per mode (the engine's lead, the time
from making a block to hearing it, is part of it, measured from the ring's fill when the offset is set).

- sketch: a `SketchTracker` over the input gives pitch, voicing, loudness and centroid on the frame grid.
  Delay: the lead + the tracker's latency, the newest analysed frame held over the rest of the block
  (`hold`, the default: 590 ms on the 44.1 kHz model through JACK), or + one block more with every frame
  of the block analysed (`hold=False`: 830 ms).
- jam: the input's VAE latents are the accompaniment channels, visible up to `t_f` frames past the block
  start (negative: only the past, for less delay). Delay: the lead + t_f frames. The encoder is not
  causal, so windows are encoded with `margin` frames of left context; frames still lacking that much
  right context are encoded again a block later. Cost per block: one encoder pass over about
  T + 2 * margin frames. The context frames' accompaniment is refreshed each block, so it is as visible as
  training saw it (in Block-Causal mode, for the frames not yet in the cache).
- delay: the input `blocks` blocks ago becomes the whole context (mask 1, its clean latents) and the block
  is generated from it under the prompt. Delay: exactly `blocks` blocks (to within a frame). Cost per block:
  the encoder over C + 2 * margin frames at most (cached as for jam) and, in Block-Causal mode, one pass
  over the context to rebuild the cache (what Enc-Dec does anyway).

A file that is not real time (`FileInput(realtime=False)`) is a score: its sample 0 stands at the block
the mode started at (plus the delay's blocks), whatever the lead, so renders with it are deterministic.

Threads: the control thread opens feeds and swaps an immutable `LivePlan` in; only the inference thread
reads inputs and touches a feed's buffers. A failing mode reports one line and the block goes on without it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..dsp.sketch import Controls, SketchConfig, SketchTracker
from ..model.codec import Codec
from ..model.extras import accomp_channels, sketch_channels
from .params import check_integer, check_number

if TYPE_CHECKING:
    from .engine import Engine

MODES = ("sketch", "jam", "delay")
TIMBRES = ("prompt", "input")
# A hum is loud and dark next to the leads the model learnt the sketch from: a near-sine hum at -13 dB
# with its centroid at its pitch (300-450 Hz), where 99 % of the rendered leads' voiced frames are quieter
# and 98 % brighter (medians -25 dB and 1.8 kHz). So by default a hum steers pitch and phrasing, and the
# prompt the timbre: on a 12 s hum the 44.1 kHz model's output pitch followed it at r 0.39 with the hum's
# own curves and 0.58 with these (docs/default-model.md).
SKETCH_LEAD_DB = -25.0
SKETCH_LEAD_CENTROID_HZ = 1800.0
SAFETY_S = 0.05  # on top of the lead: a slower block than the recent ones still finds its input there
SILENT_DB = -80.0


@dataclass(frozen=True)
class SketchSettings:
    """strength: how far the sketch pulls. The five channels are scaled by it, so below 1 they blend toward
    'off' (all zeros, what the model sees without a sketch) and 0 is off; above 1 (up to 2) they are
    exaggerated, beyond anything the model was trained on. median: causal median over the curves, in
    frames (odd, 1 = off; training drew 1, 3, 5 or 9): it removes glitches of (median - 1) / 2 frames
    and delays changes by as many. hold: see the module docstring. timbre: "prompt" takes only pitch and
    voicing from the input and gives the voiced frames the loudness and brightness of a typical rendered
    lead (`SKETCH_LEAD_DB`, `SKETCH_LEAD_CENTROID_HZ`); "input" takes all four curves as they are."""

    strength: float = 1.0
    median: int = 5
    hold: bool = True
    timbre: str = "prompt"

    def __post_init__(self) -> None:
        if self.timbre not in TIMBRES:
            raise ValueError(f"timbre must be one of {', '.join(TIMBRES)}, got {self.timbre!r}")
        object.__setattr__(self, "strength", check_number(self.strength, "strength", 0.0, 2.0))
        median = check_integer(self.median, "filter", 1, 31)
        if median % 2 == 0:
            raise ValueError(f"filter must be odd (1 = off), got {median}")
        object.__setattr__(self, "median", median)


@dataclass(frozen=True)
class JamSettings:
    """t_f: frames of the input past the block start the model sees (-T..T, checked against the model).
    mix: how much of the input is added to the output (0..1), aligned with what the model heard when the
    delay allows it (t_f covering the block), else at the least delay that has the whole block."""

    t_f: int = 0
    mix: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "t_f", check_integer(self.t_f, "t_f", -4096, 4096))
        object.__setattr__(self, "mix", check_number(self.mix, "mix", 0.0, 1.0))


@dataclass(frozen=True)
class DelaySettings:
    blocks: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", check_integer(self.blocks, "blocks", 1, 64))


@dataclass(frozen=True)
class NoteSketch:
    """Notes standing in for a hummed pitch: the held note (None: none) and its velocity."""

    on: bool = False
    note: int | None = None
    velocity: int = 0


class Feed:
    """One input on the inference thread: the device, a rolling model-rate buffer, and where its samples
    sit on the stream's clock. The control thread creates it; after that only the inference thread uses
    it, except `close`."""

    def __init__(self, inp: Any, source: Any, hop: int, owned: bool = True) -> None:
        if getattr(inp, "channels", 1) != 1:
            raise ValueError(f"live input must be mono, got {inp.channels} channels")
        self.input, self.source, self.hop, self.owned = inp, source, hop, owned
        self.realtime = bool(getattr(inp, "realtime", True))
        self.origin = int(inp.frames_read)  # the first input sample this feed sees
        self.start = self.origin  # input sample index of buf[0]
        self.buf = np.zeros(0, np.float32)
        self.offset: int | None = None  # stream sample s <-> input sample s - offset
        self.mix_offset = 0
        self.delay_samples = 0
        self.mix_delay_samples = 0
        self.key: Any = None  # the settings the offset was set for
        self.mode_state: Any = None  # the mode's own: a tracker, a latent cache

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def pull(self, need_end: int) -> None:
        """Everything that has arrived (real time), or up to `need_end` (a score-like file)."""
        n = self.input.available if self.realtime else max(need_end - self.end, 0)
        if n <= 0:
            return
        x = self.input.read(n)
        if x is not None and x.shape[-1]:
            self.buf = np.concatenate([self.buf, np.asarray(x[0], np.float32)])

    def samples(self, k0: int, k1: int) -> np.ndarray:
        """Input samples [k0, k1), silence where there are none (before the start, not yet arrived)."""
        out = np.zeros(max(k1 - k0, 0), np.float32)
        a, b = max(k0, self.start), min(k1, self.end)
        if b > a:
            out[a - k0 : b - k0] = self.buf[a - self.start : b - self.start]
        return out

    def trim(self, keep_from: int) -> None:
        cut = min(max(keep_from - self.start, 0), len(self.buf))
        if cut:
            self.buf, self.start = self.buf[cut:], self.start + cut

    def anchor(
        self, key: Any, block_start: int, heard_in_s: float, sr: int, delay: int, mix_delay: int
    ) -> None:
        """Tie the feed to the stream: block_start is the stream sample the next block starts at, heard
        `heard_in_s` from now; the newest input sample was captured now. `delay`: samples wanted."""
        if self.realtime:
            lag = (block_start - int(round(heard_in_s * sr))) - self.end  # stream heard now - input now
        else:
            lag = block_start - self.end
        self.offset = -(-(lag + delay) // self.hop) * self.hop
        self.mix_offset = -(-(lag + mix_delay) // self.hop) * self.hop
        self.delay_samples = self.offset - lag
        self.mix_delay_samples = self.mix_offset - lag
        self.key = key

    def close(self) -> None:
        if self.owned:
            try:
                self.input.stop()
            except Exception:  # a device that is already gone has nothing left to release
                pass


@dataclass(frozen=True)
class LivePlan:
    """What the next block uses: each mode's feed and settings (None: off), and the note sketch."""

    sketch: tuple[Feed, SketchSettings] | None = None
    jam: tuple[Feed, JamSettings] | None = None
    delay: tuple[Feed, DelaySettings] | None = None
    notes: NoteSketch = field(default_factory=NoteSketch)

    def feeds(self) -> list[Feed]:
        return [m[0] for m in (self.sketch, self.jam, self.delay) if m is not None]


class _LatentCache:
    """VAE latents of input frames, encoded with `margin` frames of context each side; frames that had
    less right context than that are encoded again when more input has come."""

    def __init__(self, codec: Codec, margin: int) -> None:
        self.codec, self.margin = codec, margin
        self.io = int(codec.dim)
        self.start = 0
        self.lat = torch.zeros(self.io, 0)
        self.final = None  # frames before this are final

    def get(self, feed: Feed, j0: int, j1: int) -> tuple[Tensor, np.ndarray]:
        """Latents (io, j1 - j0) of input frames [j0, j1) and which of them exist (zeros where not)."""
        hop, m = feed.hop, self.margin
        out, valid = torch.zeros(self.io, j1 - j0), np.zeros(j1 - j0, bool)
        lo, hi = max(j0, -(-feed.origin // hop)), min(j1, feed.end // hop)
        if hi <= lo:
            return out, valid
        if self.final is None or lo < self.start or lo > self.final:
            self.start, self.lat, self.final = lo, torch.zeros(self.io, 0), lo
        cached_end = self.start + self.lat.shape[-1]
        if cached_end < hi or self.final < hi:
            a = self.final
            right = min(feed.end // hop, hi + m)
            x = torch.from_numpy(feed.samples((a - m) * hop, right * hop))[None, None]
            with torch.no_grad():
                z = self.codec.encode(x)[0, :, m:].float().cpu()
            self.lat = torch.cat([self.lat[:, : a - self.start], z], dim=1)
            self.final = max(a, right - m)
        keep = lo - self.start  # frames before lo are not asked for again
        if keep > 0:
            self.lat, self.start = self.lat[:, keep:], lo
        out[:, lo - j0 : hi - j0] = self.lat[:, : hi - lo]
        valid[lo - j0 : hi - j0] = True
        return out, valid


class LiveInput:
    """The modes of one engine. `block_inputs(b)` runs before block b (it may write the stream's context)
    and returns the `next_block` keywords; `mix(audio, b)` runs after it. Neither raises: a failing mode
    reports through `on_error` and the block goes on without it."""

    def __init__(self, engine: Engine, on_error: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        model = engine.stream.model
        self.model, self.hop, self.sr = model, int(model.hop), int(model.sample_rate)
        self.T, self.C = model.lmdm.block_frames, model.lmdm.context_frames
        self.N = self.T * self.hop
        self.layout = model.layout
        self.margin = model.codec.encoder_margin
        self.plan = LivePlan()
        self.on_error = on_error or (lambda msg: None)
        self.trace: collections.deque[dict] = collections.deque(maxlen=512)  # per block: frames used
        self._last_error = ""

    # --- control thread -----------------------------------------------------------------------------------

    def set(self, mode: str, feed: Feed | None, settings: Any = None) -> None:
        """Swap mode `mode` to (feed, settings) or off (feed None); a feed left behind is closed."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        old = self.plan
        new = replace(old, **{mode: None if feed is None else (feed, settings)})
        self.plan = new
        for f in old.feeds():
            if all(f is not g for g in new.feeds()):
                f.close()

    def set_notes(self, notes: NoteSketch) -> None:
        self.plan = replace(self.plan, notes=notes)

    def feed_of(self, source: Any) -> tuple[str, Feed] | None:
        for mode in MODES:
            m = getattr(self.plan, mode)
            if m is not None and (m[0].source is source or m[0].source == source):
                return mode, m[0]
        return None

    def close(self) -> None:
        old, self.plan = self.plan, LivePlan()
        for f in old.feeds():
            f.close()

    def latency(self) -> dict:
        """The delay each running mode introduces (ms), once it has started."""
        out = {}
        for mode in MODES:
            m = getattr(self.plan, mode)
            if m is not None and m[0].offset is not None:
                name = "generative_delay_ms" if mode == "delay" else f"{mode}_delay_ms"
                out[name] = round(m[0].delay_samples / self.sr * 1e3, 1)
                if mode == "jam" and m[1].mix > 0:
                    out["jam_mix_delay_ms"] = round(m[0].mix_delay_samples / self.sr * 1e3, 1)
        return out

    # --- inference thread ---------------------------------------------------------------------------------

    def block_inputs(self, block: int) -> dict:
        plan = self.plan
        out: dict[str, Tensor] = {}
        for mode, run in (("delay", self._delay), ("jam", self._jam), ("sketch", self._sketch)):
            m = getattr(plan, mode)
            if m is None and not (mode == "sketch" and plan.notes.on):
                continue
            try:
                got = run(block, m, plan)
                if got is not None:
                    out[mode if mode != "jam" else "accomp"] = got
            except Exception as e:
                self._error(f"{mode}: {type(e).__name__}: {e}")
        return out

    def mix(self, audio: np.ndarray, block: int) -> np.ndarray:
        """Add the jam input to the block's audio (channels, n), which ends at stream sample
        (block + 1) * N - decoder latency."""
        m = self.plan.jam
        if m is None or m[1].mix <= 0 or m[0].offset is None:
            return audio
        try:
            n = audio.shape[1]
            end = (block + 1) * self.N - self.engine.stream.latency_samples
            k0 = end - n - m[0].mix_offset
            return audio + np.float32(m[1].mix) * m[0].samples(k0, k0 + n)[None, :]
        except Exception as e:
            self._error(f"jam mix: {type(e).__name__}: {e}")
            return audio

    def _error(self, msg: str) -> None:
        if msg != self._last_error:  # a mode failing every block says so once
            self._last_error = msg
            self.on_error(msg)

    def _lead_s(self) -> float:
        """The longest a block waits, from being made to being heard, plus a safety margin."""
        return self.engine.lead_s() + SAFETY_S

    def _ready(
        self, feed: Feed, key: Any, block: int, live_s: float, score_s: float = 0.0, mix_s: float = 0.0
    ) -> None:
        """Pull what has arrived and (re)tie the feed to the stream when its settings changed. live_s:
        the delay wanted from a real-time input; score_s: from a score-like file; mix_s: the least delay
        the jam's mix needs from a real-time input."""
        if feed.realtime:
            feed.pull(0)
        if feed.offset is None or feed.key != key:
            d = int(round((live_s if feed.realtime else score_s) * self.sr))
            md = max(d, int(round(mix_s * self.sr))) if feed.realtime else d
            feed.anchor(key, block * self.N, self.engine.heard_in_s(), self.sr, d, md)

    def _cache(self, feed: Feed) -> _LatentCache:
        if not isinstance(feed.mode_state, _LatentCache):
            feed.mode_state = _LatentCache(self.model.codec, self.margin)
        return feed.mode_state

    # generative delay: the input `blocks` blocks ago is the context
    def _delay(self, block: int, m: tuple[Feed, DelaySettings], plan: LivePlan) -> None:
        feed, st = m
        wanted = st.blocks * self.N / self.sr
        self._ready(feed, ("delay", st.blocks), block, wanted, wanted)
        of = feed.offset // self.hop
        j1 = block * self.T - of
        j0 = j1 - self.C
        feed.pull((j1 + self.margin) * self.hop)
        lat, valid = self._cache(feed).get(feed, j0, j1)
        feed.trim((j0 + self.T - 2 * self.margin) * self.hop)
        self.trace.append({"block": block, "mode": "delay", "frames": (j0, j1), "valid": int(valid.sum())})
        if not valid.any():
            return None
        self.engine.stream.replace_context(lat, torch.from_numpy(valid))
        return None

    # jamming: the input's latents are the accompaniment
    def _jam(self, block: int, m: tuple[Feed, JamSettings], plan: LivePlan) -> Tensor:
        feed, st = m
        t_f = st.t_f
        key = ("jam", t_f, st.mix > 0)
        lead = self._lead_s()
        mix_s = lead + (self.N - self.engine.stream.latency_samples) / self.sr if st.mix > 0 else 0.0
        self._ready(feed, key, block, lead + t_f * self.hop / self.sr, 0.0, mix_s)
        of = feed.offset // self.hop
        j0 = block * self.T - self.C - of
        j_vis = block * self.T + t_f - of
        need = max(j_vis, j0 + self.C) + self.margin
        mix_end = (block + 1) * self.N - feed.mix_offset
        feed.pull(max(need * self.hop, mix_end))
        lat, valid = self._cache(feed).get(feed, j0, max(j_vis, j0 + self.C))
        full = torch.zeros(lat.shape[0], self.C + self.T)
        vis = np.zeros(self.C + self.T, bool)
        n = min(lat.shape[1], self.C + self.T)
        full[:, :n], vis[:n] = lat[:, :n], valid[:n]
        vis &= np.arange(j0, j0 + self.C + self.T) < j_vis
        acc = accomp_channels(full, torch.from_numpy(vis))
        self._refresh_context(acc[:, : self.C])
        keep = min((j0 + self.T - 2 * self.margin) * self.hop, mix_end - 2 * self.N)
        feed.trim(keep)
        self.trace.append({"block": block, "mode": "jam", "frames": (j0, j_vis), "valid": int(vis.sum())})
        return acc[:, self.C :]

    def _refresh_context(self, acc: Tensor) -> None:
        """The context's accompaniment channels as visible now (they were stored as visible then)."""
        self.engine.stream.refresh_extras("accomp", acc)

    # sketch: controls from the input (and notes)
    def _sketch(self, block: int, m: tuple[Feed, SketchSettings] | None, plan: LivePlan) -> Tensor:
        t_len = self.T
        curves = None
        strength = 1.0
        if m is not None:
            feed, st = m
            strength = st.strength
            curves = self._sketch_curves(block, feed, st)
            if st.timbre == "prompt":  # the tracker's frames are a fresh array: set them in place
                curves[2] = np.where(curves[1] > 0.5, SKETCH_LEAD_DB, curves[2])
                curves[3] = SKETCH_LEAD_CENTROID_HZ
        if plan.notes.on:
            curves = _with_notes(curves, plan.notes, t_len)
        assert curves is not None
        return strength * sketch_channels(*(torch.from_numpy(c) for c in curves))

    def _sketch_curves(self, block: int, feed: Feed, st: SketchSettings) -> np.ndarray:
        tr = feed.mode_state
        if not isinstance(tr, _Tracker) or tr.median != st.median:
            origin = feed.origin if tr is None else feed.end  # a new filter starts from here
            tr = feed.mode_state = _Tracker(self.sr, self.hop, st.median, origin)
        lat_s = tr.tracker.latency_samples / self.sr
        live_s = self._lead_s() + lat_s + (0.0 if st.hold else self.N / self.sr)
        self._ready(feed, ("sketch", st.hold), block, live_s)
        of = feed.offset // self.hop
        j0 = block * self.T - of
        feed.pull((j0 + self.T) * self.hop + tr.tracker.latency_samples + self.hop)
        tr.push(feed)
        feed.trim(tr.pushed)
        self.trace.append({"block": block, "mode": "sketch", "frames": (j0, j0 + self.T), "have": tr.end})
        return tr.frames(j0, j0 + self.T)


class _Tracker:
    """A `SketchTracker` over a feed from input sample `origin` (a frame boundary) on, with its curves."""

    def __init__(self, sr: int, hop: int, median: int, origin: int) -> None:
        self.median, self.hop = median, hop
        self.tracker = SketchTracker(SketchConfig(sample_rate=sr, hop=hop, median=median))
        self.first = -(-origin // hop)  # input frame of the tracker's frame 0
        self.pushed = self.first * hop
        self.curves = np.zeros((4, 0), np.float32)
        self.start = self.first  # input frame of curves[:, 0]

    @property
    def end(self) -> int:
        return self.start + self.curves.shape[1]

    def push(self, feed: Feed) -> None:
        if feed.end <= self.pushed:
            return
        got: Controls = self.tracker.push(feed.samples(self.pushed, feed.end).astype(np.float64))
        self.pushed = feed.end
        if len(got):
            self.curves = np.concatenate([self.curves, got.as_array()], axis=1)

    def frames(self, j0: int, j1: int) -> np.ndarray:
        """(4, j1 - j0) curves of input frames [j0, j1): silence before the tracker's start, the newest
        frame held after its end."""
        out = np.zeros((4, j1 - j0), np.float32)
        out[2] = SILENT_DB
        a, b = max(j0, self.start), min(j1, self.end)
        if b > a:
            out[:, a - j0 : b - j0] = self.curves[:, a - self.start : b - self.start]
        if self.end > self.start and j1 > max(self.end, j0):
            h = max(self.end, j0)
            out[:, h - j0 :] = self.curves[:, -1:]
        keep = max(j0 - self.start - 8, 0)  # older frames are never asked for again
        if keep:
            self.curves, self.start = self.curves[:, keep:], self.start + keep
        return out


def _with_notes(curves: np.ndarray | None, notes: NoteSketch, n: int) -> np.ndarray:
    """Notes give pitch and voicing; loudness and centroid come from the input when there is one, else
    from the velocity and the note (a voice-like brightness of three times the fundamental)."""
    held = notes.note is not None and notes.velocity > 0
    out = curves.copy() if curves is not None else np.zeros((4, n), np.float32)
    out[0] = float(notes.note) if held else 0.0
    out[1] = 1.0 if held else 0.0
    if curves is None:
        if held:
            f0 = 440.0 * 2 ** ((notes.note - 69) / 12)
            out[2] = -46.0 + 40.0 * notes.velocity / 127
            out[3] = min(max(3 * f0, 200.0), 4000.0)
        else:
            out[2], out[3] = SILENT_DB, 0.0
    return out
