"""The styles a model knows, and the nearest of them to a prompt.

A model file lists the styles it was trained on (style word -> one line of instruments and tempo), so
`lmdm-live styles` and `inst.styles()` can say what it knows. A prompt is compared with each style by the
cosine of mean-pooled text-encoder embeddings (how sentence embeddings are made from MiniLM's tokens); one
that is close to none of them still plays, with a line that names the nearest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .conditioners import TextEncoder

FAR_BELOW = 0.45  # the best cosine under which a prompt is far from every style (docs/default-model.md)


def sentence_embeddings(text: TextEncoder, prompts: list[str]) -> Tensor:
    """(N, D) unit vectors: each prompt's token embeddings averaged over its mask."""
    tokens, mask = text.encode(prompts)
    m = mask[..., None].to(torch.float32)
    pooled = (tokens.to(torch.float32) * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


@dataclass
class StyleVocabulary:
    styles: dict[str, str]
    _embedded: Tensor | None = field(default=None, repr=False)

    def embed(self, text: TextEncoder) -> None:
        """Embed every style's name and description once (about a second for 23 styles on one core). An
        instrument does it before it starts: done on the first prompt change, it held the interpreter long
        enough to starve the inference thread, and the sound underran."""
        if self.styles and self._embedded is None:
            names = list(self.styles)
            words = [n.replace("_", " ") for n in names]
            both = sentence_embeddings(text, words + [f"{w}: {self.styles[n]}" for w, n in zip(words, names)])
            self._embedded = both.view(2, len(names), -1)

    def nearest(self, prompt: str, text: TextEncoder, k: int = 3) -> list[tuple[str, float]]:
        """The k styles closest to `prompt`, best first, with their cosine (by name or by description)."""
        if not self.styles:
            return []
        names = list(self.styles)
        self.embed(text)
        p = sentence_embeddings(text, [prompt])[0]
        score = (self._embedded @ p).amax(0)
        best = torch.argsort(score, descending=True)[:k]
        return [(names[i], round(float(score[i]), 3)) for i in best.tolist()]

    def far(self, prompt: str, text: TextEncoder) -> list[str] | None:
        """The nearest styles' names when `prompt` is far from all the model knows, else None."""
        near = self.nearest(prompt, text)
        if not near or not prompt.strip() or near[0][1] >= FAR_BELOW:
            return None
        return [name for name, _ in near]
