"""`Instrument`: the object a live coder plays. Every setter validates, builds an immutable snapshot and
schedules it; nothing here touches the model or the audio thread directly.

    >>> inst = Instrument()
    >>> inst.prompt("dub techno, 124 bpm")
    >>> inst.prompts({"dub techno": 1, "choir": 0.5}, at="bar")
    >>> inst.cfg(3); inst.steps(4); inst.gain(0.8); inst.status()
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dsp.limiter import DEFAULT_LIMITER, LimiterConfig
from ..model.styles import StyleVocabulary
from .engine import Engine
from .params import check_at, in_domain
from .sampler_controls import SamplerControls
from .schedule import HEADROOM_PRESETS_MS, LATENCY_PRESETS, StatusReport
from .stream import LMDMStream, StreamParams

if TYPE_CHECKING:
    from ..audio.input import AudioInput
    from .inputs import Feed, LiveInput

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL_FILE = ASSETS / "default.lmdm.safetensors"


def default_model_ref() -> str:
    """The shipped model when present; until it ships, the random 'tiny' preset (noise, not music)."""
    return str(DEFAULT_MODEL_FILE) if DEFAULT_MODEL_FILE.is_file() else "tiny"


class Instrument(SamplerControls):
    """A playing LMDM stream with live controls.

    `backend`: "jack", "sounddevice", "file", an `AudioBackend`, or None for the first that works (falling
    back to recording a WAV file when no audio device exists, and saying so).
    `dtype`: the DiT's, for a model loaded here: "auto" is bfloat16 where the CPU multiplies it natively
    (its blocks about a third faster, the same evaluation scores), else float32. `threads`: torch's intra-op threads while
    it plays (default: all cores but one, which the audio and control threads need; see `threads.py`).
    `limiter`: the output's peak ceiling (linear, at most 1): a lookahead limiter turns the gain down
    smoothly before a sample would pass it, adding no latency; None turns it off.
    """

    def __init__(
        self,
        model: str | Any | None = None,
        *,
        backend: str | Any | None = None,
        out: str | Path | None = None,
        device: str | int | None = None,
        headroom_ms: float | str | None = None,
        latency: str = "normal",
        seed: int = 0,
        prompt: str = "",
        steps: int | None = None,
        cfg: float | None = None,
        sampler: str | None = None,
        tempo_guidance: float | None = None,
        bpm: float = 120.0,
        log: str | Path | None = None,
        t5: str | None = None,
        start: bool = True,
        quiet: bool = False,
        model_ref: str | None = None,
        dtype: str = "auto",
        threads: int | None = None,
        limiter: float | None = DEFAULT_LIMITER.ceiling,
    ) -> None:
        from ..model.bundle import LMDMModel, load_model
        from ..model.precision import resolve_dtype
        from .threads import ThreadBudget, inference_threads

        self._threads = ThreadBudget(inference_threads(threads))
        limits = None if limiter is None else LimiterConfig(ceiling=float(limiter))  # refused before a load

        if latency not in LATENCY_PRESETS:
            raise ValueError(f"latency must be one of {', '.join(LATENCY_PRESETS)}, got {latency!r}")
        preset = LATENCY_PRESETS[latency]
        headroom_ms = preset.headroom if headroom_ms is None else headroom_ms
        if isinstance(headroom_ms, str):
            if headroom_ms not in HEADROOM_PRESETS_MS:
                raise ValueError(
                    f"headroom preset must be one of {sorted(HEADROOM_PRESETS_MS)}, got {headroom_ms!r}"
                )
            headroom_ms = HEADROOM_PRESETS_MS[headroom_ms]
        self._say = (lambda msg: None) if quiet else (lambda msg: print(f"lmdm-live: {msg}", file=sys.stderr))
        if isinstance(model, LMDMModel):  # model_ref: how `replay` finds it again (a preset or a path)
            self.model, ref = model, model_ref or model.name
        else:
            ref = model or default_model_ref()
            if ref == "tiny" and model is None:
                self._say(
                    "no default model ships yet: playing the untrained 'tiny' preset (noise, not music)"
                )
            from ..model.lmdm import LMDMConfig

            window = None if Path(ref).is_file() else LMDMConfig()
            self.model = load_model(ref, window, "cpu", resolve_dtype(dtype, "cpu"))
        # None: the model's own sampler defaults (a trained model records what it plays best with)
        if steps is None:
            steps = preset.steps(self.model.sampler_settings().steps)
        settings = self.model.sampler_settings(
            steps=steps, cfg=cfg, sampler=sampler, tempo_guidance=tempo_guidance
        )
        self._params = StreamParams.of(prompt, sampler=settings, bpm=float(bpm))
        self._gain = 1.0
        self._unmuted_gain = 1.0
        self._seed = int(seed)
        self._bpm = float(bpm)
        text = self.model.text_encoder(t5)
        self._styles = StyleVocabulary(dict(self.model.styles))
        self._styles.embed(text)  # now, not on the first prompt change while the engine plays
        self.notice: str | None = None  # the last far-prompt line
        self.notices = 0  # how many were given
        self.stream = LMDMStream(self.model, text, seed=self._seed, params=self._params)
        self.backend = self._open_backend(backend, out, device)
        self.engine = Engine(
            self.stream,
            self.backend,
            headroom_ms=float(headroom_ms),
            log_path=log,
            bpm=self._bpm,
            model_ref=ref,
            limiter=limits,
        )
        self.engine.splice = preset.splice
        self.latency_preset = latency
        if start:
            self.start()

    @property
    def threads(self) -> int:
        """torch's intra-op threads while it plays."""
        return self._threads.threads

    @property
    def dtype(self) -> str:
        """The DiT's dtype, as played ("float32", "bfloat16" or "int8")."""
        from ..model.precision import model_dtype_name

        return model_dtype_name(self.model.net)

    def _open_backend(self, kind, out, device):
        from ..audio import NoAudioDevice, open_backend

        if kind is not None and not isinstance(kind, str):
            return kind  # an AudioBackend instance
        if kind == "file" or (kind is None and out is not None):
            return open_backend(
                "file", path=out or _default_out(), sample_rate=self.model.sample_rate, realtime=True
            )
        try:
            opts = {"device": device} if kind == "sounddevice" and device is not None else {}
            return open_backend(kind, **opts)
        except NoAudioDevice:
            if kind is not None:
                raise
            path = out or _default_out()
            self._say(
                f"no audio device was found (no running JACK server, no sound card): recording to {path}"
            )
            return open_backend("file", path=path, sample_rate=self.model.sample_rate, realtime=True)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> Instrument:
        self._threads.enter()
        self.engine.start()
        return self

    def stop(self) -> None:
        self.unwatch()
        self.engine.stop()
        if self.engine.live is not None:
            self.engine.live.close()
        self._threads.leave()

    def __enter__(self) -> Instrument:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the snapshot ---------------------------------------------------------------------------------------

    def _set(self, params: StreamParams, at: Any) -> None:
        at = check_at(at)
        if params == self._params:
            return  # re-evaluating the same line is a no-op
        new_prompt = params.dominant != self._params.dominant
        self._params = params
        self.engine.submit("params", params, at)
        if new_prompt:
            self._check_known(params.dominant)

    @property
    def params(self) -> StreamParams:
        return self._params  # the snapshot the next change builds on

    @property
    def unmuted_gain(self) -> float:
        return self._unmuted_gain  # what unmute() goes back to

    def set_params(self, params: StreamParams, at: Any = "now") -> None:
        """A whole snapshot at once (a remote laptop's): every field lands on the same block."""
        self._set(params if isinstance(params, StreamParams) else StreamParams.from_dict(params), at)

    def _check_known(self, prompt: str) -> None:
        """One line when a prompt is far from every style the model knows (it still plays)."""
        near = self._styles.far(prompt, self.stream.text)
        self.notice = None
        if near:
            self.notice = f"{prompt!r} is far from what this model knows; nearest: {', '.join(near)}"
            self.notices += 1
            self._say(self.notice)

    def styles(self) -> dict[str, str]:
        """The styles the model was trained on, with a line each (`lmdm-live styles`)."""
        return dict(self.model.styles)

    # --- controls -------------------------------------------------------------------------------------------

    def prompt(self, text: str | None = None, at: Any = "now") -> str | None:
        """Set one prompt (or read the dominant one)."""
        if text is None:
            return self._params.dominant
        if not isinstance(text, str):
            raise ValueError(f"prompt must be a string, got {type(text).__name__}")
        self._set(replace(self._params, prompts=((text, 1.0),)), at)
        return None

    def prompts(self, weights: dict[str, float] | None = None, at: Any = "now") -> dict[str, float] | None:
        """Blend prompts by weight: `inst.prompts({"acid": 1, "strings": 0.3})`."""
        if weights is None:
            return dict(self._params.prompts)
        if not isinstance(weights, dict) or not weights:
            raise ValueError("prompts takes a non-empty {text: weight} dict")
        self._set(StreamParams(**{**vars(self._params), "prompts": tuple(weights.items())}), at)
        return None

    def seed(self, value: int | None = None, at: Any = "now") -> int | None:
        if value is None:
            return self._seed
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"seed must be an integer, got {value!r}")
        at = check_at(at)
        if value != self._seed:
            self._seed = value
            self.engine.submit("seed", value, at)
        return None

    def drop_context(self, frames: int | None = None, at: Any = "now") -> None:
        """Forget the oldest `frames` context frames (all of them by default): a fresh start, same prompt."""
        c = self.model.lmdm.context_frames
        frames = c if frames is None else frames
        if isinstance(frames, bool) or not isinstance(frames, int) or not 0 < frames <= c:
            raise ValueError(f"frames must be an integer in 1..{c}, got {frames!r}")
        self.engine.submit("drop", frames, check_at(at))

    def gain(self, value: float | None = None, at: Any = "now") -> float | None:
        """Output gain (0..4), ramped over one block."""
        if value is None:
            return self._gain
        value = in_domain("gain", value)
        at = check_at(at)
        if value != self._gain:
            self._gain = value
            self.engine.submit("gain", value, at)
        return None

    def mute(self, at: Any = "now") -> None:
        """Fade to silence (the stream keeps running, so unmute continues the music)."""
        if self._gain > 0:
            self._unmuted_gain = self._gain
        self.gain(0.0, at)

    def unmute(self, at: Any = "now") -> None:
        self.gain(self._unmuted_gain or 1.0, at)

    def hush(self) -> None:
        """Silence now: cancel scheduled changes and fade out."""
        self.engine.cancel_pending()
        # what is playing is what the cancelled changes would have replaced: report that, not them
        playing = self.engine.playing
        self._params, self._seed, self._gain = playing.params, playing.seed, playing.gain
        self.mute("now")

    def reset(self, at: Any = "now") -> None:
        """Start the music over from an empty context (prompt and settings stay)."""
        self.engine.submit("reset", None, check_at(at))

    def bpm(self, value: float | None = None) -> float | None:
        """Tempo: the beat/bar grid `at="beat"`/`"bar"` quantise to, and what a model with tempo channels
        plays at (from the next block on)."""
        if value is None:
            return self._bpm
        value = in_domain("bpm", value)
        self._bpm = value
        self.engine.bpm = value
        self._set(replace(self._params, bpm=value), "now")
        return None

    # --- live input: sketch, jam, generative delay -----------------------------------------------------------

    def sketch(
        self, source: Any, strength: float = 1.0, filter: int = 5, hold: bool = True, timbre: str = "prompt"
    ) -> None:
        """Steer the music with a hummed, sung or played line (an input spec, see `open_input`, or an
        `AudioInput`): its pitch and voicing, and with timbre="input" its loudness and brightness too.
        strength 0..2 (below 1 blends toward no sketch), filter: causal median in frames (odd)."""
        from .inputs import SketchSettings

        self._needs("sketch")
        settings = SketchSettings(strength, filter, bool(hold), timbre)
        self._live().set("sketch", self._feed("sketch", source), settings)

    def sketch_off(self) -> None:
        self._live().set("sketch", None)

    def sketch_notes(self, on: bool = True) -> None:
        """Let notes (MIDI, OSC /lmdm/sketch/note, `sketch_note`) stand in for the sketch's pitch."""
        from .inputs import NoteSketch

        self._needs("sketch")
        self._held_notes: dict[int, int] = {}
        self._live().set_notes(NoteSketch(on=bool(on)))

    @property
    def notes_drive_sketch(self) -> bool:
        live = self.engine.live
        return live is not None and live.plan.notes.on

    def sketch_note(self, note: int, velocity: int = 100) -> None:
        """A note on (velocity > 0) or off (0) for the sketch's pitch; the newest held note sounds."""
        from .inputs import NoteSketch

        if not self.notes_drive_sketch:
            raise ValueError("sketch notes are off: call inst.sketch_notes() first")
        for name, v in (("note", note), ("velocity", velocity)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 127:
                raise ValueError(f"{name} must be an integer in 0..127, got {v!r}")
        held = self._held_notes
        held.pop(note, None)
        if velocity > 0:
            held[note] = velocity
        last = next(reversed(held), None)
        self._live().set_notes(NoteSketch(True, last, held.get(last, 0) if last is not None else 0))

    def jam(self, source: Any, t_f: int = 0, mix: float = 0.0) -> None:
        """Play along with `source` (drums work best: the model was trained to add the rest of the mix):
        its latents are the accompaniment, seen `t_f` frames past each block start (-T..T; negative: less
        delay, the model plays ahead). mix 0..1 adds the input to the output."""
        from .inputs import JamSettings

        self._needs("accomp")
        t = self.model.lmdm.block_frames
        settings = JamSettings(t_f, mix)
        if not -t <= settings.t_f <= t:
            raise ValueError(f"t_f must be an integer in {-t}..{t} (frames), got {t_f!r}")
        self._live().set("jam", self._feed("jam", source), settings)

    def jam_off(self) -> None:
        self._live().set("jam", None)

    def delay(self, source: Any, blocks: int = 4, prompt: str | None = None) -> None:
        """The generative delay: `source` as it was `blocks` blocks ago becomes the context, and each block
        is generated from it (under `prompt`, when given)."""
        from .inputs import SAFETY_S, DelaySettings

        settings = DelaySettings(blocks)
        block_s = self.model.block_seconds
        least = self.engine.lead_s() + SAFETY_S
        if settings.blocks * block_s < least:
            raise ValueError(
                f"a delay of {settings.blocks} blocks ({settings.blocks * block_s * 1e3:.0f} ms) is shorter "
                f"than the instrument's lead ({least * 1e3:.0f} ms): use blocks >= {math.ceil(least / block_s)}"
            )
        if prompt is not None:
            self.prompt(prompt)
        self._live().set("delay", self._feed("delay", source), settings)

    def delay_off(self) -> None:
        self._live().set("delay", None)

    def _needs(self, part: str) -> None:
        layout = self.model.layout
        if not getattr(layout, part):
            have = ", ".join(k for k, v in layout.to_dict().items() if v) or "none"
            raise ValueError(f"this model has no {part} channels (its extras: {have})")

    def _live(self) -> LiveInput:
        if self.engine.live is None:
            from .inputs import LiveInput

            def report(msg: str) -> None:
                self.engine.errors.append(msg)
                self.engine.stats.last_error = msg

            self.engine.live = LiveInput(self.engine, on_error=report)
        return self.engine.live

    def _feed(self, mode: str, source: str | AudioInput) -> Feed:
        """The feed for `source`: the one `mode` already reads, or a newly opened input."""
        from .feeds import open_feed

        return open_feed(self._live(), mode, source, self.model.sample_rate, self.model.hop)

    # --- figures, recording --------------------------------------------------------------------------------

    def status(self) -> StatusReport:
        st = self.engine.status()
        return StatusReport(
            prompt=self._params.dominant,
            prompts=dict(self._params.prompts),
            cfg=self._params.sampler.cfg,
            cfg_pp=self._params.sampler.cfg_pp,
            tempo_guidance=self._params.sampler.tempo_guidance,
            sketch_guidance=self._params.sampler.sketch_guidance,
            steps=self._params.sampler.steps,
            sampler=self._params.sampler.sampler,
            seed=self._seed,
            gain=self._gain,
            bpm=self._bpm,
            backend=getattr(self.backend, "name", "none"),
            **st,
        )

    def latency(self) -> StatusReport:
        return StatusReport(self.engine.latency())

    def record(self, path: str | Path | int) -> None:
        """Record what is played (device rate, float WAV) from the next block on, to `path` (or a descriptor
        opened for writing). The file's header is kept true as it grows: a crash leaves a readable WAV."""
        self.engine.record(path)

    def stop_recording(self) -> None:
        self.engine.stop_recording()

    def wait_blocks(self, n: int, timeout: float = 60.0) -> None:
        """Block until `n` more blocks were generated (for scripts and tests)."""
        target = self.engine.stats.blocks + n
        end = time.monotonic() + timeout
        while self.engine.stats.blocks < target:
            if time.monotonic() > end:
                raise TimeoutError(f"{n} blocks not generated within {timeout} s")
            time.sleep(0.01)

    # --- patches --------------------------------------------------------------------------------------------

    def load(self, patch: Any, at: Any = "bar") -> Any:
        """Play a patch (a .toml path, a name under patches/, or a loaded `Patch`): prompts, sampler, gain,
        bpm and seed all land at `at`, or nothing changes. Returns its MIDI mappings and OSC aliases."""
        from .patch import Patch, apply_patch, load_patch

        return apply_patch(self, patch if isinstance(patch, Patch) else load_patch(patch), at)

    def watch(self, path: Any, at: Any = "bar", on_error: Any = None, on_load: Any = None) -> Any:
        """Load a patch now and again on every save; a broken save is reported and the sound plays on."""
        from .patch_watch import watch_patch

        self.unwatch()
        self._patch_watcher = watch_patch(self, path, at, on_load=on_load, on_error=on_error or self._say)
        return self._patch_watcher

    def unwatch(self) -> None:
        watcher = getattr(self, "_patch_watcher", None)
        if watcher is not None:
            watcher.stop()
            self._patch_watcher = None


def _default_out() -> Path:
    return Path("out") / time.strftime("lmdm-live-%Y%m%d-%H%M%S.wav")
