"""The instrument's sampler controls: guidance, tempo and sketch guidance, steps and the sampler. Each builds a new
parameter snapshot with one sampler setting changed and hands it to the instrument's `_set`, which applies
it now or at the quantised time `at`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .params import PARAMS, check_number
from .stream import StreamParams


class SamplerControls:
    """Mixed into `Instrument`, which holds `_params` and implements `_set`."""

    _params: StreamParams

    def _set(self, params: StreamParams, at: Any) -> None:
        raise NotImplementedError

    def _sampler(self, at: Any, **kw) -> None:
        self._set(replace(self._params, sampler=replace(self._params.sampler, **kw)), at)

    def cfg(self, scale: float | None = None, at: Any = "now") -> float | None:
        """Classifier-free guidance scale (1 = off). Turns CFG++ off."""
        if scale is None:
            return self._params.sampler.cfg
        self._sampler(at, cfg=float(scale), cfg_pp=None)
        return None

    def cfg_pp(self, lam: float | str | None = None, at: Any = "now") -> float | None:
        """CFG++ with lambda `lam` (about 0.5–1); `cfg_pp("off")` goes back to plain CFG."""
        if lam is None:
            return self._params.sampler.cfg_pp
        self._sampler(at, cfg_pp=None if lam == "off" else float(lam))
        return None

    def tempo_guidance(self, w: float | None = None, at: Any = "now") -> float | None:
        """Guidance on the tempo channels (0 = off; the model card gives the model's own): pushes the music
        onto the bpm where the model leans on its prompt and context for the tempo. Costs a third row."""
        if w is None:
            return self._params.sampler.tempo_guidance
        p = PARAMS["tempo_guidance"]
        self._sampler(at, tempo_guidance=check_number(w, "tempo_guidance", p.lo, p.hi))
        return None

    def sketch_guidance(self, w: float | None = None, at: Any = "now") -> float | None:
        """Guidance on a hummed sketch (0 = off; the model card gives the model's own): pushes the music
        toward the sketch's melody. Costs a row per model call while a sketch plays, none otherwise."""
        if w is None:
            return self._params.sampler.sketch_guidance
        p = PARAMS["sketch_guidance"]
        self._sampler(at, sketch_guidance=check_number(w, "sketch_guidance", p.lo, p.hi))
        return None

    def steps(self, n: int | None = None, at: Any = "now") -> int | None:
        if n is None:
            return self._params.sampler.steps
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"steps must be an integer, got {n!r}")
        self._sampler(at, steps=n)
        return None

    def sampler(self, name: str | None = None, at: Any = "now") -> str | None:
        if name is None:
            return self._params.sampler.sampler
        self._sampler(at, sampler=name)
        return None
