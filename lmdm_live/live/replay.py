"""Rebuild a live performance offline from the engine's event log, sample for sample.

The log holds everything that is not a pure function of the model and the seed: the starting parameters,
every change with the block index it took effect at, and every failed block. Re-running the same stream and
output chain through those events gives the same device-rate samples the engine wrote into its ring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..dsp.limiter import LimiterConfig
from ..model.lmdm import LMDMConfig
from .output import OutputChain, splice_frames
from .stream import LMDMStream, StreamParams
from .threads import ThreadBudget


def read_log(path: str | Path, heard: bool = True) -> list[dict]:
    """The log's events. `heard`: as played, i.e. without the events of blocks the engine made again (a
    "rewind" to block b undoes what was logged before it for blocks from b on); else every line."""
    events = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{Path(path).name}:{n}: not a JSON event ({e.msg})") from None
    if not events or events[0].get("type") != "start":
        raise ValueError(f"{Path(path).name} is not an lmdm-live event log (no start event first)")
    return _heard(events) if heard else events


def _heard(events: list[dict]) -> list[dict]:
    out: list[dict] = []
    for e in events:
        kind = e.get("type")
        if kind in ("rewind", "splice"):  # a splice keeps its block's old events: heard up to the cut
            last = int(e["block"]) - (kind == "rewind")
            out = [x for x in out if x.get("type") == "start" or int(x.get("block", 0)) <= last]
        if kind != "rewind":
            out.append(e)
    return out


def replay(log: str | Path, model=None, text=None, t5_path: str | None = None) -> tuple[np.ndarray, int]:
    """Render the logged performance: (frames, channels) float32 at the logged device rate, and that rate.

    `model`/`text` may be given (already loaded) to skip loading; otherwise the log's model reference (a
    preset name or a checkpoint path) is loaded with the logged window and DiT dtype (logs before the dtype
    was logged played float32).
    """
    from ..model.bundle import load_model
    from ..model.precision import resolve_dtype

    events = read_log(log)
    head = events[0]
    if model is None:
        dtype = resolve_dtype(head.get("dtype", "float32"))
        model = load_model(head["model"], LMDMConfig(**head["window"]), "cpu", dtype)
    if text is None:
        text = model.text_encoder(t5_path)
    stream = LMDMStream(model, text, seed=int(head["seed"]), params=StreamParams.from_dict(head["params"]))
    stream.block_index = int(head.get("block", 0))
    lim = head.get("limiter")  # a log from before the limiter has none
    chain = OutputChain(
        model.sample_rate,
        int(head["out_rate"]),
        int(head["out_channels"]),
        limiter=LimiterConfig(**lim) if lim is not None else None,
    )
    chain.fade = int(head["fade"])
    chain.gain = chain._gain_now = float(head.get("gain", 1.0))
    end = next((e["block"] for e in reversed(events) if e.get("type") == "stop"), None)
    if end is None:
        end = max((e.get("block", 0) for e in events), default=0) + 1
    by_block: dict[int, list[dict]] = {}
    cuts: dict[int, tuple[int, int, list[dict]]] = {}  # block -> (frame, fade, its old version's events)
    for e in events[1:]:
        if e.get("type") == "splice":
            cuts[int(e["block"])] = (int(e["at"]), int(e["fade"]), by_block.pop(int(e["block"]), []))
        elif e.get("type") != "stop":
            by_block.setdefault(int(e["block"]), []).append(e)
    out = []
    samples = model.lmdm.block_frames * model.hop
    # the logged thread count too: sums split over another number of threads round differently
    budget = ThreadBudget(int(head["threads"])) if "threads" in head else None
    if budget is not None:
        budget.enter()
    try:
        _render(stream, chain, by_block, cuts, end, samples, out)
    finally:
        if budget is not None:
            budget.leave()
    audio = np.concatenate(out) if out else np.zeros((0, chain.out_channels), np.float32)
    return audio, chain.out_rate


def _render(
    stream, chain, by_block: dict[int, list[dict]], cuts: dict, end: int, samples: int, out: list
) -> None:
    """Play the logged events block by block into `out`, as the engine applied them; a block a change cut
    into is made twice from its boundary, as the engine made it, and spliced where the engine spliced it."""
    while stream.block_index < end:
        b = stream.block_index
        if b in cuts:
            at, frames, old_events = cuts[b]
            snap, chain_snap = stream.snapshot(), chain.snapshot()
            old = _block(stream, chain, old_events, b, samples)
            stream.restore(snap)
            chain.restore(chain_snap)
            new = _block(stream, chain, by_block.get(b, []), b, samples)
            out.append(splice_frames(old, new, at, frames))
        else:
            out.append(_block(stream, chain, by_block.get(b, []), b, samples))


def _block(stream, chain, events: list[dict], b: int, samples: int) -> np.ndarray:
    """One block's device frames after its logged events."""
    failed = False
    for e in events:
        kind, value = e["type"], e.get("value")
        if kind == "params":
            stream.set(StreamParams.from_dict(value))
        elif kind == "gain":
            chain.gain = float(value)
        elif kind == "drop":
            stream.drop_context(int(value))
        elif kind == "seed":
            stream.seed = int(value)
        elif kind == "reset":
            stream.restart()
        elif kind == "fault":
            failed = True
        else:
            raise ValueError(f"unknown event type {kind!r} at block {b}")
    if failed:
        stream.recover(next_block=b + 1)
        return chain.fail(samples)
    return chain.push(stream.next_block())
