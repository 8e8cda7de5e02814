"""Opening what a live input reads: an input spec ("jack:PORT", "sd", a file) or an `AudioInput` given
ready, checked against the model's rate and against the other modes, which may already read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..audio.backend import BackendUnavailable
from ..audio.devices import INPUT_SPECS, open_input
from ..audio.input import AudioInput
from .inputs import Feed, LiveInput


def open_feed(live: LiveInput, mode: str, source: str | AudioInput, sample_rate: int, hop: int) -> Feed:
    """The feed for `source`: the one `mode` already reads, or a newly opened input."""
    in_use = live.feed_of(source.strip() if isinstance(source, str) else source)
    if in_use is not None and in_use[0] == mode:
        return in_use[1]
    if isinstance(source, AudioInput):
        if in_use is not None:
            raise ValueError(f"this input already feeds the {in_use[0]}; open another one for the {mode}")
        if source.sample_rate != sample_rate or source.channels != 1:
            raise ValueError(
                f"{mode} input must be mono at the model's {sample_rate} Hz, got "
                f"{source.channels} ch at {source.sample_rate} Hz"
            )
        return Feed(source, source, hop, owned=False)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{mode} source must be {INPUT_SPECS}, or an AudioInput; got {source!r}")
    spec = source.strip()
    opts: dict[str, Any] = {}
    if spec.partition(":")[0] == "jack":
        opts["client_name"] = f"lmdm-{mode}"
    elif Path(spec).is_file():
        opts["realtime"] = True  # played in as if live
    try:
        inp = open_input(spec, sample_rate, 1, **opts)
        inp.start()
    except (ValueError, BackendUnavailable, OSError) as e:
        raise ValueError(f"{mode}: {' '.join(str(e).split())}") from None
    return Feed(inp, spec, hop)
