"""`LMDMStream`: the stateful, deterministic block generator every front end (live engine, render) drives.

Determinism: block b is sampled with a generator seeded from (seed, b) only, and parameter changes take
effect at block boundaries, so the same checkpoint + seed + schedule of changes by block index gives
bit-identical latents and audio, offline or live.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from ..model.bundle import LMDMModel
from ..model.conditioners import TextEncoder
from ..model.extras import tempo_grid
from ..model.lmdm import LMDM, BlockState, Conditioning, branch_conditioning
from ..model.samplers import SamplerSettings

_GOLDEN = 0x9E3779B97F4A7C15
COND_CACHE_SIZE = 8  # prompt sets whose conditioning is kept
# CFG++ through a transition is opt-in: measured on the default model (docs/default-model.md, prompt
# transitions), lambda 1 after a switch raised the peak from 0.42 to 1.37 and switched a block later
TRANSITION_CFG_PP: float | None = None


def block_seed(seed: int, block: int) -> int:
    """A well-mixed 63-bit seed for block `block` of a stream seeded `seed` (splitmix64 finaliser)."""
    z = (seed * _GOLDEN + block + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class StreamParams:
    """An immutable snapshot of what the next block is generated from. Build new ones with `replace`."""

    prompts: tuple[tuple[str, float], ...] = (("", 1.0),)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    eject_frames: int | None = None  # context frames dropped when the dominant prompt changes; None: C - T
    # CFG++ lambda for the blocks of a prompt transition (while old context is in the window), against the
    # over-saturation plain CFG gives there at few steps; None: the prompt's own sampler throughout
    transition_cfg_pp: float | None = TRANSITION_CFG_PP
    seconds: float | None = None  # seconds_total conditioning; None: the model's own
    bpm: float | None = None  # the tempo a model with tempo channels plays at; None: no clock (free time)

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("at least one prompt is needed (use '' for none)")
        norm = []
        for p in self.prompts:
            text, weight = (p, 1.0) if isinstance(p, str) else p
            if not isinstance(text, str):
                raise ValueError(f"prompt text must be a string, got {text!r}")
            weight = float(weight)
            if not np.isfinite(weight) or weight < 0:
                raise ValueError(f"prompt weights must be finite and >= 0, got {weight} for {text!r}")
            norm.append((text, weight))
        if sum(w for _, w in norm) <= 0:
            raise ValueError("prompt weights must not all be 0")
        object.__setattr__(self, "prompts", tuple(norm))
        if self.eject_frames is not None and self.eject_frames < 0:
            raise ValueError(f"eject_frames must be >= 0, got {self.eject_frames}")
        if self.transition_cfg_pp is not None and not 0.0 <= self.transition_cfg_pp <= 2.0:
            raise ValueError(f"transition_cfg_pp must be in 0..2, got {self.transition_cfg_pp}")
        if self.bpm is not None and not (np.isfinite(self.bpm) and 20.0 <= self.bpm <= 400.0):
            raise ValueError(f"bpm must be in 20..400, got {self.bpm}")

    @classmethod
    def of(cls, prompt: str | dict[str, float] | None = None, **kw) -> StreamParams:
        """`StreamParams.of("techno")` or `StreamParams.of({"techno": 2, "ambient pads": 1}, ...)`."""
        if prompt is None:
            prompts: tuple[tuple[str, float], ...] = (("", 1.0),)
        elif isinstance(prompt, str):
            prompts = ((prompt, 1.0),)
        else:
            prompts = tuple(prompt.items())
        return cls(prompts=prompts, **kw)

    def to_dict(self) -> dict:
        """JSON-ready form, for event logs and patches (`from_dict` inverts it exactly)."""
        return {
            "prompts": [[t, w] for t, w in self.prompts],
            "sampler": asdict(self.sampler),
            "eject_frames": self.eject_frames,
            "transition_cfg_pp": self.transition_cfg_pp,
            "seconds": self.seconds,
            "bpm": self.bpm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StreamParams:
        unknown = set(d) - {"prompts", "sampler", "eject_frames", "transition_cfg_pp", "seconds", "bpm"}
        if unknown:
            raise ValueError(f"unknown stream parameter(s): {', '.join(sorted(unknown))}")
        return cls(
            prompts=tuple((str(t), float(w)) for t, w in d.get("prompts", [["", 1.0]])),
            sampler=SamplerSettings(**d.get("sampler", {})),
            eject_frames=d.get("eject_frames"),
            transition_cfg_pp=d.get("transition_cfg_pp", TRANSITION_CFG_PP),
            seconds=d.get("seconds"),
            bpm=d.get("bpm"),
        )

    @property
    def dominant(self) -> str:
        """The heaviest prompt (first one on ties): a change of it is a change of piece, so old context goes."""
        return max(self.prompts, key=lambda p: p[1])[0]


@dataclass(frozen=True)
class StreamSnapshot:
    """A stream at a block boundary: `LMDMStream.restore` makes the same blocks again from it, bit for bit
    (the engine regenerates queued blocks that were not heard yet when a change comes)."""

    block_index: int
    params: StreamParams
    seed: int
    beat: float
    transition_left: int
    nonfinite_blocks: int
    schedule: dict[int, StreamParams]
    state: BlockState
    decoder: object | None


class LMDMStream:
    """Generates one block at a time; holds the KV cache, context window, decoder state and schedule."""

    def __init__(
        self,
        model: LMDMModel,
        text: TextEncoder,
        seed: int = 0,
        params: StreamParams | None = None,
        decode: bool = True,
    ) -> None:
        self.model, self.text, self.seed = model, text, int(seed)
        self.lmdm = LMDM(model.dit, model.lmdm)
        self.decoder = model.codec.streaming_decoder() if decode else None
        self.schedule: dict[int, StreamParams] = {}
        self.nonfinite_blocks = 0
        self._initial = params or StreamParams()
        # a small LRU: a few prompts are played back and forth, and each entry holds every layer's cross K/V
        self._cond_cache: OrderedDict[tuple, Conditioning] = OrderedDict()
        self._sketching = False  # whether the block being made has a sketch (sketch guidance's row)
        self.reset()

    # --- control ------------------------------------------------------------------------------------------

    def reset(self, params: StreamParams | None = None) -> None:
        """Back to block 0 with an empty context (the schedule is kept)."""
        self.params = params or self._initial
        self.block_index = 0
        self.beat = 0.0  # beat position at the start of the next block (tempo channels)
        self.transition_left = 0  # blocks of the current prompt transition still to make
        self.state: BlockState = self.lmdm.new_state(self._branches(self.params).rows)
        if self.decoder is not None:
            self.decoder.reset()

    def restart(self) -> None:
        """Start the music over from an empty context, between blocks (a player's reset). The decoder keeps
        its carried audio: restarting it too would leave a gap of its latency in the sound, as after a fault,
        where its state cannot be trusted."""
        self.state = self.lmdm.new_state(self._branches(self.params).rows)

    def recover(self, next_block: int) -> None:
        """After a failed block: forget the context and the decoder's state, continue at `next_block`.

        The failed block's index is skipped, not retried, so a replay that skips it too stays in step.
        """
        self.restart()
        skipped = max(next_block - self.block_index, 0)  # the beat goes on through skipped blocks
        self.beat += skipped * self.model.lmdm.block_frames * self.beats_per_frame
        self.block_index = max(self.block_index, next_block)
        if self.decoder is not None:
            self.decoder.reset()

    def drop_context(self, frames: int) -> None:
        """Eject the oldest `frames` context frames now (between blocks)."""
        self.state.eject(frames)

    def set(self, params: StreamParams) -> None:
        """Use `params` from the next block on: applied now, between blocks, so a live change is queued once
        (in the engine) and never again here; it replaces anything scheduled for that block."""
        self.schedule.pop(self.block_index, None)
        self._apply(params)

    def replace_context(self, latents: Tensor, valid: Tensor) -> None:
        """Make `latents` (io, C) the clean context where `valid` (C,) is true (a generative delay's input),
        and rebuild the cache from it at the next block."""
        frames = self.state.frames.clone()
        frames[0, 0, valid] = 1.0
        frames[0, 1 : 1 + self.state.io, valid] = latents[:, valid].to(frames)
        self.state.frames = frames
        self.state.rebootstrap()

    def refresh_extras(self, name: str, values: Tensor) -> None:
        """Overwrite the context's `name` extras channels (e.g. "accomp", as visible now: they were stored as
        visible then), and the pending block's, which enters the cache with the next block."""
        sl = self.model.layout.offsets()[name]
        lo = 1 + self.state.io
        self.state.refresh(lo + sl.start, lo + sl.stop, values[None])

    def at(self, block: int, params: StreamParams) -> None:
        """Schedule `params` to take effect at block index `block` (deterministic, for renders and replays)."""
        if block < self.block_index:
            raise ValueError(f"block {block} has already been generated (now at {self.block_index})")
        self.schedule[block] = params

    def snapshot(self) -> StreamSnapshot:
        """Everything the next block depends on (the KV cache and the decoder's state copied)."""
        return StreamSnapshot(
            self.block_index,
            self.params,
            self.seed,
            self.beat,
            self.transition_left,
            self.nonfinite_blocks,
            dict(self.schedule),
            self.state.copy(),
            None if self.decoder is None else self.decoder.snapshot(),
        )

    def restore(self, snap: StreamSnapshot) -> None:
        """Back to a snapshot's block boundary (the snapshot stays usable)."""
        self.block_index, self.params, self.seed = snap.block_index, snap.params, snap.seed
        self.beat, self.transition_left = snap.beat, snap.transition_left
        self.nonfinite_blocks = snap.nonfinite_blocks
        self.schedule = dict(snap.schedule)
        self.state = snap.state.copy()
        if self.decoder is not None and snap.decoder is not None:
            self.decoder.restore(snap.decoder)

    # --- generation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def next_latents(
        self, extras: Tensor | None = None, *, sketch: Tensor | None = None, accomp: Tensor | None = None
    ) -> Tensor:
        """The next block of clean latents (1, io, T).

        A model with named extras (`model.layout`) gets its tempo channels from `params.bpm`, and the
        sketch (5, T) / accompaniment (1+io, T) channels when given; `extras` (1, E, T) overrides them all."""
        new = self.schedule.pop(self.block_index, None)
        if new is not None:
            self._apply(new)
        p = self.params
        self._sketching = sketch is not None  # sketch guidance has a sketch to guide toward
        if extras is None:
            extras = self._named_extras(p, sketch, accomp)
        cond = self._conditioning(p)
        self.lmdm.resize(self.state, cond.rows)
        gen = torch.Generator().manual_seed(block_seed(self.seed, self.block_index))
        block = self.lmdm.generate(self.state, cond, self._sampler(p), gen, target_extras=extras)
        if not torch.isfinite(block).all():
            # never let a bad block poison the context: forget it and play silence-in-latent-space
            self.nonfinite_blocks += 1
            self.state.frames[:, :, -block.shape[-1] :] = 0
            self.state.rebootstrap()
            block = torch.zeros_like(block)
        self.block_index += 1
        self.beat += self.model.lmdm.block_frames * self.beats_per_frame
        return block

    @torch.no_grad()
    def next_block(
        self, extras: Tensor | None = None, *, sketch: Tensor | None = None, accomp: Tensor | None = None
    ) -> np.ndarray:
        """The next block as audio, float32 (channels, samples). The first blocks are shorter by the decoder's
        latency (`latency_samples`); afterwards every block is exactly `block_frames * hop` samples."""
        if self.decoder is None:
            raise RuntimeError("this stream was made with decode=False")
        lat = self.next_latents(extras, sketch=sketch, accomp=accomp)
        return self._audio(self.decoder.push(lat))

    def flush(self) -> np.ndarray:
        """The decoder's last `latency_samples` (the tail of the final block)."""
        if self.decoder is None:
            raise RuntimeError("this stream was made with decode=False")
        return self._audio(self.decoder.flush())

    def _audio(self, decoded: Tensor) -> np.ndarray:
        """Decoder output -> numpy at the model's calibrated level (`LMDMModel.level`)."""
        out = decoded[0].float().cpu().numpy()
        level = self.model.level
        return out if level == 1.0 else out * np.float32(level)

    @property
    def latency_samples(self) -> int:
        return 0 if self.decoder is None else self.decoder.latency_samples

    @property
    def beats_per_frame(self) -> float:
        bpm = self.params.bpm or 0.0
        return bpm / 60.0 * self.model.hop / self.model.sample_rate

    # --- internals ----------------------------------------------------------------------------------------

    def _named_extras(self, p: StreamParams, sketch: Tensor | None, accomp: Tensor | None) -> Tensor | None:
        layout = self.model.layout
        if not layout.channels:
            return None
        t_len = self.model.lmdm.block_frames
        tempo = None
        if layout.tempo and p.bpm is not None:
            tempo = tempo_grid(self.beat, t_len, self.beats_per_frame, p.bpm)
        return layout.build(t_len, tempo, sketch, accomp)[None]

    def _apply(self, new: StreamParams) -> None:
        """A change of the dominant prompt is a transition (the paper's recipe): drop the oldest context
        chunks, rebuild the cache from what is left, and (with `transition_cfg_pp`) sample with CFG++
        until the old context is gone."""
        old = self.params
        self.params = new
        if new.dominant != old.dominant and self.state.mask.any():
            c, t = self.model.lmdm.context_frames, self.model.lmdm.block_frames
            self.state.eject(new.eject_frames if new.eject_frames is not None else default_eject(c, t))
            self.transition_left = -(-c // t)

    def _branches(self, p: StreamParams) -> SamplerSettings:
        """The prompt's sampler, with tempo guidance only where there is a clock to guide toward (a model
        with tempo channels, and a bpm) and sketch guidance only while a sketch plays: without them their
        rows would be the conditional row again."""
        s = p.sampler
        if s.tempo_guidance > 0 and not (self.model.layout.tempo and p.bpm is not None):
            s = replace(s, tempo_guidance=0.0)
        if s.sketch_guidance > 0 and not (self.model.layout.sketch and self._sketching):
            s = replace(s, sketch_guidance=0.0)
        return s

    def _sampler(self, p: StreamParams) -> SamplerSettings:
        """The prompt's sampler, or CFG++ in its place for a transition's blocks (when it guides at all:
        switching an unguided stream to two rows would rebuild the cache twice)."""
        s = self._branches(p)
        if self.transition_left <= 0:
            return s
        self.transition_left -= 1
        if p.transition_cfg_pp is None or not s.guided or s.cfg_pp is not None:
            return s
        return replace(s, cfg_pp=p.transition_cfg_pp)

    def _conditioning(self, p: StreamParams) -> Conditioning:
        branches = self._branches(p)
        key = (
            p.prompts,
            p.seconds,
            branches.guided,
            branches.tempo_guidance > 0,
            branches.sketch_guidance > 0,
        )
        hit = self._cond_cache.get(key)
        if hit is not None:
            self._cond_cache.move_to_end(key)
            return hit
        texts = [t for t, _ in p.prompts]
        weights = torch.tensor([w for _, w in p.prompts], dtype=torch.float32)
        weights = weights / weights.sum()
        tokens, mask = self.text.encode(texts)
        tokens = tokens.float() * mask[..., None].float()
        blended = (weights[:, None, None] * tokens.cpu()).sum(0, keepdim=True)
        net = self.model.net
        dtype = next(net.parameters()).dtype
        device = next(net.parameters()).device
        seconds = self.model.seconds_total if p.seconds is None else p.seconds
        cross, glob = net.conditioning(blended.to(device, dtype), [seconds])
        off = self.model.layout.offsets()
        sketch = [off["sketch"], off["tone"]]
        cond = branch_conditioning(self.model.dit, cross, glob, branches, off["tempo"], sketch)
        self._cond_cache[key] = cond
        while len(self._cond_cache) > COND_CACHE_SIZE:
            self._cond_cache.popitem(last=False)
        return cond


def default_eject(context: int, block: int) -> int:
    """Frames a transition drops by default: whole chunks, all but the newest. The paper drops 180 of 192
    frames (keeping 0.56 s); C - T keeps 0.51 s at the default model's 48/16 frames of 32 ms."""
    return max(context - block, 0)


def render(stream: LMDMStream, blocks: int) -> np.ndarray:
    """Generate `blocks` blocks and the decoder tail: (channels, blocks * block_frames * hop) float32."""
    parts = [stream.next_block() for _ in range(blocks)]
    parts.append(stream.flush())
    return np.concatenate(parts, axis=1)


__all__ = ["LMDMStream", "StreamParams", "block_seed", "render", "replace"]
