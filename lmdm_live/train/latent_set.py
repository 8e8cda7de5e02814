"""Pre-encoded training examples: the latents, text tokens and controls stage 1 and ARC-Forcing read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor


@dataclass
class LatentSet:
    """Pre-encoded examples: latents (io, L_i) with L_i >= C+T, and per-example text tokens (S, D).

    Optional, per example: `controls` (7 or 9, L_i) raw frame controls (bpm, beat phase, bar phase,
    pitch_midi, voiced, loudness_db, centroid_hz[, lead_loudness_db, lead_centroid_hz]); `drums`/`rest`
    (io, L_i), the latents of the drum stem and of the mix without it (the accompaniment pairs jamming is
    trained on); `lead` (io, L_i), the latents of the lead stem alone, with `solo_tokens` (N, S, D), the
    tokens of its caption (the solo-melody windows a hummed sketch is trained on).
    """

    latents: list[Tensor]
    tokens: Tensor  # (N, S, D)
    controls: list[Tensor] | None = None
    drums: list[Tensor | None] | None = None
    rest: list[Tensor | None] | None = None
    lead: list[Tensor | None] | None = None
    solo_tokens: Tensor | None = None
    styles: list[str] | None = None  # each example's style label ("" where none), what the model will know

    def __post_init__(self) -> None:
        if len(self.latents) != self.tokens.shape[0] or not self.latents:
            raise ValueError(f"{len(self.latents)} latent clips for {self.tokens.shape[0]} token sets")
        for name in ("controls", "drums", "rest", "lead", "solo_tokens", "styles"):
            v = getattr(self, name)
            if v is not None and len(v) != len(self.latents):
                raise ValueError(f"{len(v)} {name} entries for {len(self.latents)} latent clips")
        if (self.lead is None) != (self.solo_tokens is None):
            raise ValueError("lead latents and solo tokens come together")

    def save(self, path: str | Path) -> None:
        """One safetensors file: `latents.<i>` (io, L_i), `tokens` (N, S, D), optional `controls.<i>`,
        `drums.<i>`, `rest.<i>`, `lead.<i>` and `solo_tokens` (N, S, D)."""
        tensors = {f"latents.{i}": x.contiguous() for i, x in enumerate(self.latents)}
        tensors["tokens"] = self.tokens.contiguous()
        if self.solo_tokens is not None:
            tensors["solo_tokens"] = self.solo_tokens.contiguous()
        for name in ("controls", "drums", "rest", "lead"):
            for i, x in enumerate(getattr(self, name) or []):
                if x is not None:
                    tensors[f"{name}.{i}"] = x.contiguous()
        meta = {"styles": json.dumps(self.styles)} if self.styles is not None else None
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> LatentSet:
        """The set in `path`. With `mmap` its tensors are views of the file mapped into memory: only what is
        read is paged in, and the pages are shared by every process on the host (data-parallel ranks)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"latent set not found: {path}")
        if mmap:
            from .mapped import map_safetensors

            t = map_safetensors(path)
        else:
            t = load_file(str(path))
        if "tokens" not in t:
            raise ValueError(f"{Path(path).name} has no 'tokens' tensor (not a latent set)")
        n = t["tokens"].shape[0]
        missing = [i for i in range(n) if f"latents.{i}" not in t]
        if missing:
            raise ValueError(f"{Path(path).name}: latents missing for examples {missing[:5]}")

        def opt(name: str) -> list | None:
            if not any(k.startswith(name + ".") for k in t):
                return None
            return [t.get(f"{name}.{i}") for i in range(n)]

        controls = opt("controls")
        if controls is not None and any(c is None for c in controls):
            raise ValueError(f"{Path(path).name}: controls missing for some examples")
        lead = opt("lead")
        solo = t.get("solo_tokens") if lead is not None else None
        with safe_open(str(path), "pt") as f:
            styles = (f.metadata() or {}).get("styles")
        return cls(
            [t[f"latents.{i}"] for i in range(n)],
            t["tokens"],
            controls,
            opt("drums"),
            opt("rest"),
            lead,
            solo,
            json.loads(styles) if styles else None,
        )

    @classmethod
    def concat(cls, sets: list[LatentSet]) -> LatentSet:
        """One set from several encoded in the same token space (`train latents --keep-codec-scale`)."""
        if len(sets) == 1:
            return sets[0]
        if len({s.controls is None for s in sets}) > 1:
            raise ValueError("some latent sets have frame controls and some do not: encode them alike")
        width = max(s.tokens.shape[1] for s in sets)

        def pad(tokens: Tensor) -> Tensor:
            return torch.nn.functional.pad(tokens, (0, 0, 0, width - tokens.shape[1]))

        def many(name: str) -> list | None:
            if all(getattr(s, name) is None for s in sets):
                return None
            return [x for s in sets for x in (getattr(s, name) or [None] * len(s.latents))]

        has_lead = any(s.lead is not None for s in sets)
        solo = None
        if has_lead:
            solo = torch.cat(
                [
                    pad(s.solo_tokens) if s.solo_tokens is not None else pad(torch.zeros_like(s.tokens))
                    for s in sets
                ]
            )
        return cls(
            [x for s in sets for x in s.latents],
            torch.cat([pad(s.tokens) for s in sets]),
            many("controls"),
            many("drums"),
            many("rest"),
            many("lead"),
            solo,
            None
            if all(s.styles is None for s in sets)
            else [x for s in sets for x in s.styles or [""] * len(s.latents)],
        )

    def crop_starts(self, idx: list[int], frames: int, gen: torch.Generator) -> list[int]:
        starts = []
        for i in idx:
            x = self.latents[i]
            if x.shape[-1] < frames:
                raise ValueError(f"clip {i} has {x.shape[-1]} frames, a window needs {frames}")
            starts.append(int(torch.randint(x.shape[-1] - frames + 1, (1,), generator=gen)))
        return starts

    def batch(
        self, n: int, frames: int, gen: torch.Generator, rows: list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """n random crops of `frames` frames and their tokens; with `rows`, only those of the n drawn (the
        draws are made for all n, so a row is the same whichever process reads it)."""
        idx = torch.randint(len(self.latents), (n,), generator=gen).tolist()
        starts = self.crop_starts(idx, frames, gen)
        rows = list(range(n)) if rows is None else rows
        crops = [self.latents[idx[r]][:, starts[r] : starts[r] + frames] for r in rows]
        return torch.stack(crops), self.tokens[[idx[r] for r in rows]]
