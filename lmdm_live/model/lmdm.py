"""Live Music Diffusion Model: a DiT made streaming, one block of latent frames at a time.

Window = C clean context frames + T target frames + the global (timestep) token G. RoPE positions are
explicit: frame j of the window sits at j+1, G at 0, as in SAOS pre-training.

Modes
- "bidirectional": SAOS block-AR outpainting. Re-noised context and target share full attention, so nothing
  can be cached: every step is a pass over C+T+1 tokens. The uncached baseline.
- "encdec": clean context enters through `to_input_add_embed` and attends only to itself; target and G see
  everything. Context K/V are computed once per block (one pass over C tokens that stops at the last layer's
  keys and values) and reused by every denoising step (T+1 query tokens). Fusing that pass into the first
  step measured slower on CPU (a masked pass over C+T+1 tokens costs more than the two apart).
- "causal": Block-Causal. Frames form chunks of T; each chunk attends to itself and the w-1 chunks before it
  (w = C/T). The cache of the last w clean chunks persists across blocks; the previous block enters the
  cache in the first denoising step of the next one (the fused first step), so a block costs 2T+1 query
  tokens for step 0 and T+1 for the rest. Cached keys are re-rotated by -T as the window slides. The
  target sees w-1 cached chunks (the training mask) at every step, or w at steps >= 1 when the checkpoint
  says so (`step_chunks`, the window of the authors' streaming cache). Cached chunks whose inputs changed
  since they were cached (a jam's accompaniment revealed after them, t_f < 0) are recomputed in the fused
  step, from the oldest changed chunk on; the extra cached chunk is what makes that exact for one chunk.
  The cache carries state the masked window pass cannot: once the window slides, cached chunks were
  computed while they saw chunks that have since left it, so training rollouts go through this path too.

Each cached mode has an uncached reference (`cached=False`) that recomputes the same masked attention from
scratch; the tests hold the two equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .cache import KVCache
from .dit import DiT
from .samplers import SamplerSettings, sample_block
from .window import MODES, BlockState, Conditioning, LMDMConfig, Mode, chunk_mask, encdec_mask

__all__ = [
    "LMDM",
    "branch_conditioning",
    "MODES",
    "BlockState",
    "Conditioning",
    "LMDMConfig",
    "Mode",
    "chunk_mask",
    "encdec_mask",
    "query_tokens_per_block",
]


class LMDM:
    """Block generator over a DiT. Holds no stream state: that lives in `BlockState`."""

    def __init__(self, dit: DiT, cfg: LMDMConfig) -> None:
        if cfg.mode != "bidirectional" and not dit.cfg.input_add_dim:
            raise ValueError(f"mode {cfg.mode!r} needs a DiT with to_input_add_embed (input_add_dim > 0)")
        self.dit, self.cfg = dit, cfg
        p = next(dit.parameters())
        self.device, self.dtype = p.device, p.dtype
        c, t = cfg.context_frames, cfg.block_frames
        ar = torch.arange
        self._pos_ctx = ar(1, c + 1)
        self._pos_tg = torch.cat([ar(c + 1, c + t + 1), torch.zeros(1, dtype=torch.long)])
        self._rope_ctx = dit.rope(self._pos_ctx.to(self.device))
        self._rope_tg = dit.rope(self._pos_tg.to(self.device))
        self._rope_window = dit.rope(torch.cat([self._pos_ctx, self._pos_tg]).to(self.device))
        if cfg.mode == "causal":
            w = cfg.window_chunks
            self._rope_back = dit.rope(torch.tensor([-t], device=self.device))
            ctx_chunks = ar(c) // t
            self._mask_boot = chunk_mask(ctx_chunks, ctx_chunks, w).to(self.device)
            self._fused = {m: self._fused_tables(m) for m in (1, 2)}
        self._mask_encdec = encdec_mask(c, c + t + 1).to(self.device)
        self._chunks_cache: dict[int, tuple] = {}

    def _fused_tables(self, m: int):
        """RoPE and mask of a fused first step that (re)computes the newest m context chunks.

        The cache holds w-m+1 chunks then (positions 1-T..C-(m)T after the slide's re-rotation); the queries
        are those m chunks, the target and G. Every chunk sees itself and the w-1 chunks before it."""
        c, t, w = self.cfg.context_frames, self.cfg.block_frames, self.cfg.window_chunks
        ar = torch.arange
        rope = self.dit.rope(torch.cat([ar(c - m * t + 1, c + 1), self._pos_tg]).to(self.device))
        q = torch.cat([ar(m * t) // t + (w - m + 1), torch.full((t + 1,), w + 1)])
        k = torch.cat([ar((w - m + 1) * t) // t, q])
        return rope, chunk_mask(q, k, w).to(self.device)

    # --- state ------------------------------------------------------------------------------------------

    def new_state(self, rows: int, context: Tensor | None = None, extras: Tensor | None = None) -> BlockState:
        """A fresh stream state. The cache is sized once here: C frames (Enc-Dec) or C-T (Block-Causal)."""
        io, c = self.dit.cfg.io_channels, self.cfg.context_frames
        if context is None:  # no music yet: an empty (masked-out) context
            mask = torch.zeros(1, 1, c)
            context = torch.zeros(1, io, c)
        else:
            if context.shape != (1, io, c):
                raise ValueError(f"context must be (1, {io}, {c}), got {tuple(context.shape)}")
            mask = torch.ones(1, 1, c)
        frames = self._frames(mask.to(context), context, extras)
        t = self.cfg.block_frames
        cap = {"bidirectional": 0, "encdec": c, "causal": c}[self.cfg.mode]
        room = {"bidirectional": 0, "encdec": t + 1, "causal": 2 * t + 1}[self.cfg.mode]
        d = self.dit.cfg
        cache = (
            KVCache.allocate(d.depth, rows, d.num_heads, cap, d.head_dim, self.device, self.dtype, room=room)
            if cap
            else None
        )
        return BlockState(frames=frames, io=io, cache=cache)

    def state_from_frames(self, frames: Tensor) -> BlockState:
        """A state over a batch of context windows (B, 1+io+E, C), one stream per row (training rollouts;
        the conditioning then has B rows and no CFG branch)."""
        io, c = self.dit.cfg.io_channels, self.cfg.context_frames
        if frames.shape[1:] != (1 + io + self.dit.cfg.extra_add_channels, c):
            raise ValueError(f"frames must be (B, {1 + io + self.dit.cfg.extra_add_channels}, {c})")
        state = self.new_state(frames.shape[0])
        state.frames = frames.to(self.device, self.dtype)
        return state

    def resize(self, state: BlockState, rows: int) -> None:
        """Switch a state to another CFG batch (guidance on/off): a new cache, rebuilt from the context."""
        if state.cache is not None and state.cache.batch != rows:
            old = state.cache
            depth, _, heads, _, head_dim = old.k.shape
            state.cache = KVCache.allocate(
                depth, rows, heads, old.capacity, head_dim, self.device, self.dtype, room=old.room
            )
            state.rebootstrap()

    # --- token builders ---------------------------------------------------------------------------------

    def _ctx_tokens(self, frames: Tensor, cond: Conditioning) -> Tensor:
        """Context frames (1, 1+io+E, n) -> tokens through to_input_add_embed, one row per branch."""
        keep = cond.extras_keep
        if keep is None:
            return self._pad_add(frames.transpose(1, 2)).expand(cond.rows, -1, -1)
        io = self.dit.cfg.io_channels
        frames = frames.expand(cond.rows, -1, -1)
        extras = frames[:, 1 + io :] * keep[:, :, None].to(frames)
        return self._pad_add(torch.cat([frames[:, : 1 + io], extras], dim=1).transpose(1, 2))

    def _pad_add(self, add: Tensor) -> Tensor:
        missing = self.dit.cfg.input_add_dim - add.shape[-1]
        if missing:
            add = torch.cat([add, add.new_zeros(*add.shape[:-1], missing)], dim=-1)
        return self.dit.add_tokens(add)

    def _target_tokens(
        self, x: Tensor, t: float | Tensor, cond: Conditioning, extras: Tensor | None
    ) -> Tensor:
        """Noisy target (rows, io, T) -> [target tokens ; G] (rows, T+1, D); t is one level or one per row."""
        h = self.dit.noisy_tokens(x)
        if extras is not None and self.dit.cfg.input_add_dim:
            io = self.dit.cfg.io_channels
            if cond.extras_keep is not None:
                extras = extras * cond.extras_keep[:, :, None].to(extras)
            zeros = extras.new_zeros(extras.shape[0], 1 + io, extras.shape[-1])
            h = h + self._pad_add(torch.cat([zeros, extras], dim=1).transpose(1, 2))
        if isinstance(t, Tensor):
            tt = t.to(x.device, x.dtype).expand(x.shape[0])
        else:
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        return torch.cat([h, self.dit.global_token(tt, cond.global_cond)], dim=1)

    def _frames(self, mask: Tensor, clean: Tensor, extras: Tensor | None) -> Tensor:
        """[mask; clean; extras] on channels, on the model's device; zeros stand in for absent extras."""
        e = self.dit.cfg.extra_add_channels
        b, n = clean.shape[0], clean.shape[-1]
        if extras is None:
            extras = clean.new_zeros(b, e, n)
        elif extras.shape != (b, e, n):
            raise ValueError(f"extras must be ({b}, {e}, {n}), got {tuple(extras.shape)}")
        return torch.cat([mask, clean, extras], dim=1).to(self.device, self.dtype)

    # --- training: one masked pass over a whole window ------------------------------------------------------

    def window_velocity(
        self, frames: Tensor, x_t: Tensor, t: Tensor, cond: Conditioning, target_extras: Tensor | None = None
    ) -> Tensor:
        """Velocity for noisy targets x_t (B, io, T) at levels t (B,) given clean context `frames`
        (B, 1+io+E, C), under this mode's attention mask: what stage 1 fits. The caches reproduce it for every
        Enc-Dec block and for a Block-Causal block right after a bootstrap; later Block-Causal blocks carry
        what cached chunks saw before they left the window, which only the cache path computes."""
        if self.cfg.mode == "bidirectional":
            raise ValueError("window_velocity is for the Enc-Dec and Block-Causal modes")
        c, t_len = self.cfg.context_frames, self.cfg.block_frames
        ctx = self._pad_add(frames.transpose(1, 2))
        h = torch.cat([ctx, self._target_tokens(x_t, t, cond, target_extras)], dim=1)
        if self.cfg.mode == "encdec":
            mask = self._mask_encdec
        else:
            chunks = torch.cat([torch.arange(c) // t_len, torch.full((t_len + 1,), c // t_len)])
            mask = chunk_mask(chunks, chunks, self.cfg.window_chunks).to(self.device)
        h, _ = self.dit.run(h, self._rope_window, cond.cross, mask=mask)
        return self.dit.output(h[:, c : c + t_len])

    def chunks_velocity(
        self, frames: Tensor, x_t: Tensor, t: Tensor, cond: Conditioning, target_extras: Tensor | None = None
    ) -> Tensor:
        """Block-Causal, teacher-forced: velocities for K target chunks in one pass, as the stream's cache
        would give them had it played the clean chunks before each.

        `frames` (B, 1+io+E, C+(K-1)T) is the clean context followed by the clean targets 0..K-2 (each the
        context of the next); x_t (B, io, K*T) the noisy targets at levels t (B, K). Every clean chunk sees
        itself and the w-1 before it, as when it entered the cache; target k sees the w-1 clean chunks
        before its own and itself. Stage 1 then trains K blocks per window at about twice one block's cost,
        and on what the cache carries past the first slide, which one masked window cannot show."""
        if self.cfg.mode != "causal":
            raise ValueError("chunks_velocity is for the Block-Causal mode")
        c, t_len = self.cfg.context_frames, self.cfg.block_frames
        k_chunks = x_t.shape[-1] // t_len
        if x_t.shape[-1] != k_chunks * t_len or k_chunks < 1:
            raise ValueError(f"x_t must hold whole chunks of {t_len} frames, got {x_t.shape[-1]}")
        if frames.shape[-1] != c + (k_chunks - 1) * t_len:
            raise ValueError(f"frames must have {c + (k_chunks - 1) * t_len} frames, got {frames.shape[-1]}")
        if t.shape != (x_t.shape[0], k_chunks):
            raise ValueError(f"t must be (B, {k_chunks}), got {tuple(t.shape)}")
        rope, mask = self._chunks_tables(k_chunks)
        groups = [self._pad_add(frames.transpose(1, 2))]
        for k in range(k_chunks):
            sl = slice(k * t_len, (k + 1) * t_len)
            ext = None if target_extras is None else target_extras[..., sl]
            groups.append(self._target_tokens(x_t[..., sl], t[:, k], cond, ext))
        h, _ = self.dit.run(torch.cat(groups, dim=1), rope, cond.cross, mask=mask)
        n = frames.shape[-1]
        out = h[:, n:].unflatten(1, (k_chunks, t_len + 1))[:, :, :t_len].flatten(1, 2)
        return self.dit.output(out)

    def _chunks_tables(self, k_chunks: int):
        """RoPE and mask of `chunks_velocity` for K targets (cached: one per K)."""
        hit = self._chunks_cache.get(k_chunks)
        if hit is not None:
            return hit
        c, t, w = self.cfg.context_frames, self.cfg.block_frames, self.cfg.window_chunks
        ar = torch.arange
        n = c + (k_chunks - 1) * t
        pos = [ar(1, n + 1)]
        chunk, group = [ar(n) // t], [torch.full((n,), -1)]
        for k in range(k_chunks):
            # target k at its chunk's positions; its G one before its window, as G sits at 0 in a window
            pos += [ar(c + k * t + 1, c + (k + 1) * t + 1), torch.tensor([k * t])]
            chunk.append(torch.full((t + 1,), w + k))
            group.append(torch.full((t + 1,), k))
        pos_t, chunk_t, group_t = torch.cat(pos), torch.cat(chunk), torch.cat(group)
        d = chunk_t[:, None] - chunk_t[None, :]
        q_clean, k_clean = (group_t < 0)[:, None], (group_t < 0)[None, :]
        clean_clean = q_clean & k_clean & (d >= 0) & (d < w)
        target_clean = ~q_clean & k_clean & (d >= 1) & (d < w)
        same_group = ~q_clean & (group_t[:, None] == group_t[None, :])
        tables = (
            self.dit.rope(pos_t.to(self.device)),
            (clean_clean | target_clean | same_group).to(self.device),
        )
        self._chunks_cache[k_chunks] = tables
        return tables

    # --- one block --------------------------------------------------------------------------------------

    def generate(
        self,
        state: BlockState,
        cond: Conditioning,
        settings: SamplerSettings,
        gen: torch.Generator,
        target_extras: Tensor | None = None,
        cached: bool = True,
    ) -> Tensor:
        """Generate the next block (1, io, T) of clean latents and slide the state's window over it."""
        rows, t_len = cond.rows, self.cfg.block_frames
        if rows != settings.rows:
            raise ValueError(f"the sampler settings run {settings.rows} rows; the conditioning has {rows}")
        io = self.dit.cfg.io_channels
        noise = torch.randn((1, io, t_len), generator=gen, dtype=torch.float32).to(self.device, self.dtype)
        denoise = self.denoiser(state, cond, gen, target_extras, cached)

        def expand(x: Tensor, t: float, i: int) -> Tensor:
            return denoise(x.expand(rows, -1, -1), t, i)

        block = sample_block(expand, noise, settings, gen)
        self.advance(state, block, target_extras, cached)
        return block

    def denoiser(
        self,
        state: BlockState,
        cond: Conditioning,
        gen: torch.Generator,
        target_extras: Tensor | None = None,
        cached: bool = True,
    ):
        """The velocity callable for the state's next block: what `generate` samples through, and what a
        training rollout samples through too (so it trains on the stream's own cache). Building it runs
        the block's context pass (Enc-Dec) or bootstrap (Block-Causal) when there is one."""
        if state.cache is not None and state.cache.batch != cond.rows:
            raise ValueError("the stream's cache was built for another CFG batch; rebuild the state")
        mode = self.cfg.mode
        if mode == "bidirectional":
            return self._bidirectional(state, cond, gen)
        if mode == "encdec":
            return (self._encdec if cached else self._encdec_reference)(state, cond, target_extras)
        return (self._causal if cached else self._causal_reference)(state, cond, target_extras)

    def advance(
        self, state: BlockState, block: Tensor, extras: Tensor | None = None, cached: bool = True
    ) -> None:
        """Slide the state's window over a finished block (its clean latents, detached)."""
        block = block.detach()
        t = self.cfg.block_frames
        new = self._frames(torch.ones_like(block[:, :1]), block, extras)
        state.frames = torch.cat([state.frames[:, :, t:], new], dim=2)[:, :, -self.cfg.context_frames :]
        if self.cfg.mode == "causal":
            if cached:
                state.pending = new
            else:
                state.history.append(new)
        state.blocks += 1

    def _bidirectional(self, state: BlockState, cond: Conditioning, gen: torch.Generator):
        c = state.context
        eps_ctx = torch.randn(c.shape, generator=gen, dtype=torch.float32).to(c)
        t_len = self.cfg.block_frames

        def denoise(x: Tensor, t: float, i: int) -> Tensor:
            window = torch.cat([((1 - t) * c + t * eps_ctx).expand(x.shape[0], -1, -1), x], dim=2)
            h = torch.cat(
                [self.dit.noisy_tokens(window), self._target_tokens(x, t, cond, None)[:, -1:]], dim=1
            )
            h, _ = self.dit.run(h, self._rope_window, cond.cross)
            return self.dit.output(h[:, window.shape[-1] - t_len : window.shape[-1]])

        return denoise

    def _encdec(self, state: BlockState, cond: Conditioning, extras: Tensor | None):
        cache = state.cache
        assert cache is not None
        cache.reset()
        ctx = self._ctx_tokens(state.frames, cond)
        _, kvs = self.dit.run(ctx, self._rope_ctx, cond.cross, keep=slice(None), kv_only=True)
        cache.write(kvs)
        t_len = self.cfg.block_frames

        def denoise(x: Tensor, t: float, i: int) -> Tensor:
            h, _ = self.dit.run(
                self._target_tokens(x, t, cond, extras), self._rope_tg, cond.cross, cache.slots()
            )
            return self.dit.output(h[:, :t_len])

        return denoise

    def _encdec_reference(self, state: BlockState, cond: Conditioning, extras: Tensor | None):
        ctx = self._ctx_tokens(state.frames, cond)
        c, t_len = self.cfg.context_frames, self.cfg.block_frames

        def denoise(x: Tensor, t: float, i: int) -> Tensor:
            h = torch.cat([ctx, self._target_tokens(x, t, cond, extras)], dim=1)
            h, _ = self.dit.run(h, self._rope_window, cond.cross, mask=self._mask_encdec)
            return self.dit.output(h[:, c : c + t_len])

        return denoise

    def _causal(self, state: BlockState, cond: Conditioning, extras: Tensor | None):
        cache = state.cache
        assert cache is not None
        c, t_len, w = self.cfg.context_frames, self.cfg.block_frames, self.cfg.window_chunks
        later = (w - self.cfg.target_chunks) * t_len  # first cached frame the target sees at steps >= 1
        if state.pending is None or state.cached_frames is None or cache.length != c:
            # bootstrap: the whole context, chunk-causal, into the cache; step 0 sees the training mask's
            # w-1 chunks, steps >= 1 the configured window
            cache.reset()
            ctx = self._ctx_tokens(state.frames, cond)
            _, kvs = self.dit.run(
                ctx, self._rope_ctx, cond.cross, mask=self._mask_boot, keep=slice(None), kv_only=True
            )
            cache.write(kvs)
            state.cached_frames = state.frames
            m = 0
        else:
            # the window slid by T: cached chunks move back by T (the oldest one to positions <= 0, out of
            # every query's sight unless a stale chunk after it is recomputed)
            cache.rotate(self._rope_back)
            m = 1 + self._stale_chunks(state)
            cache.drop_newest((m - 1) * t_len)
            rope, mask = self._fused.get(m) or self._fused_tables(m)
        state.pending = None

        def denoise(x: Tensor, t: float, i: int) -> Tensor:
            tg = self._target_tokens(x, t, cond, extras)
            if m and i == 0:
                fresh = self._ctx_tokens(state.frames[..., c - m * t_len :], cond)
                h, _ = self.dit.run(torch.cat([fresh, tg], dim=1), rope, cond.cross, cache.slots(), mask)
                cache.extend(m * t_len)  # the recomputed chunks' keys/values, written right after the cache
                cache.slide(t_len)
                state.cached_frames = state.frames
                return self.dit.output(h[:, m * t_len : (m + 1) * t_len])
            start = t_len if i == 0 else later
            h, _ = self.dit.run(tg, self._rope_tg, cond.cross, cache.slots(start))
            return self.dit.output(h[:, :t_len])

        return denoise

    def _stale_chunks(self, state: BlockState) -> int:
        """Cached chunks (before the pending one) whose inputs changed since they were cached: the newest
        ones from the oldest changed chunk on. One is recomputed exactly (its w-1 predecessors are cached);
        more see fewer predecessors than when first computed."""
        c, t_len, w = self.cfg.context_frames, self.cfg.block_frames, self.cfg.window_chunks
        assert state.cached_frames is not None
        then, now = state.cached_frames[..., t_len:], state.frames[..., : c - t_len]
        if then.shape != now.shape:
            return 0
        changed = (then != now).flatten(0, 1).any(0).view(w - 1, t_len).any(1)
        if not changed.any():
            return 0
        return int(w - 1 - int(changed.nonzero()[0]))

    def _causal_reference(self, state: BlockState, cond: Conditioning, extras: Tensor | None):
        """Recompute every clean frame since the last bootstrap, chunk-causal, at each step (slow, exact)."""
        if not state.history:
            state.history = [state.frames]
        hist = torch.cat(state.history, dim=2)
        n, t_len, c, w = (
            hist.shape[-1],
            self.cfg.block_frames,
            self.cfg.context_frames,
            self.cfg.window_chunks,
        )
        h_ctx = self._ctx_tokens(hist, cond)
        pos = torch.cat([torch.arange(c + 1 - n, c + 1), self._pos_tg]).to(self.device)
        rope = self.dit.rope(pos)
        chunks = torch.cat([torch.arange(n) // t_len, torch.full((t_len + 1,), n // t_len)])
        mask = chunk_mask(chunks, chunks, w).to(self.device)

        def denoise(x: Tensor, t: float, i: int) -> Tensor:
            h = torch.cat([h_ctx, self._target_tokens(x, t, cond, extras)], dim=1)
            h, _ = self.dit.run(h, rope, cond.cross, mask=mask)
            return self.dit.output(h[:, n : n + t_len])

        return denoise


def branch_conditioning(
    dit: DiT,
    cross: Tensor,
    glob: Tensor | None,
    s: SamplerSettings,
    tempo: slice,
    sketch: Sequence[slice] = (),
) -> Conditioning:
    """The rows `s` samples with (samplers.py): the conditional one; CFG's null condition (the whole
    cross-attention context zeroed, the global condition kept); for tempo guidance the conditional one
    again with its tempo channels (`tempo`, a slice of the extra channels) zeroed; for sketch guidance the
    same with the sketch's channels (`sketch`: the sketch group and, on a model with them, the tone) zeroed."""
    rows = [cross]
    if s.guided:
        rows.append(torch.zeros_like(cross))
    dropped: list[Sequence[slice]] = []  # per guidance row, the extra channels it runs without
    if s.tempo_guidance > 0:
        dropped.append([tempo])
    if s.sketch_guidance > 0:
        dropped.append(sketch)
    keep = None
    if dropped:
        keep = torch.ones(len(rows) + len(dropped), dit.cfg.extra_add_channels)
        for i, slices in enumerate(dropped):
            for sl in slices:
                keep[len(rows) + i, sl] = 0.0
        rows += [cross] * len(dropped)
    glob = None if glob is None else glob.expand(len(rows), -1)
    return Conditioning(dit.cross_kv(torch.cat(rows)), glob, keep)


def query_tokens_per_block(cfg: LMDMConfig, steps: int, fused: bool = True) -> int:
    """Query tokens one block costs (per CFG row): the number the cache is there to shrink."""
    c, t = cfg.context_frames, cfg.block_frames
    if cfg.mode == "bidirectional":
        return (c + t + 1) * steps
    if cfg.mode == "encdec":
        return c + (t + 1) * steps
    return (t + (t + 1) * steps) if fused else c + (t + 1) * steps
