"""ARC-Forcing: rollouts are the stream's own computation, jams see the stem as they stream, the
discriminator starts from a 3/4-depth bidirectional trunk and hears the stem, and a step of either player
moves its loss on a fixed batch."""

from __future__ import annotations

import pytest
import torch
from test_train_stage1 import patterned_set, small_model

from lmdm_live.live.stream import LMDMStream, StreamParams, block_seed
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.extras import accomp_channels
from lmdm_live.model.lmdm import LMDM, Conditioning, LMDMConfig
from lmdm_live.model.samplers import SamplerSettings, logsnr_schedule
from lmdm_live.train.arc import (
    ARCConfig,
    ARCTrainer,
    Discriminator,
    RolloutExtras,
    contrastive_d_loss,
    relativistic_d_loss,
    relativistic_g_loss,
    rollout,
)

STEPS, SEED, BLOCKS = 3, 3, 9  # the first slide is block 1: blocks 2..8 are 7 more past it


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_relativistic_and_contrastive_terms_have_the_right_sign():
    d_real = torch.tensor([2.0, 1.5, 3.0], requires_grad=True)
    d_fake = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
    l_g, l_d = relativistic_g_loss(d_real, d_fake), relativistic_d_loss(d_real, d_fake)
    assert l_g > l_d  # a discriminator that ranks real above fake is winning
    (g_fake,) = torch.autograd.grad(l_g, d_fake, retain_graph=True)
    d_fake_grad, d_real_grad = torch.autograd.grad(l_d, (d_fake, d_real))
    assert (g_fake < 0).all()  # descending L_G raises the fake's score
    assert (d_fake_grad > 0).all() and (d_real_grad < 0).all()  # descending L_D lowers fake, raises real
    matched = torch.tensor([1.0, 2.0], requires_grad=True)
    rolled = torch.tensor([0.5, 3.0], requires_grad=True)
    l_c = contrastive_d_loss(matched, rolled)
    gm, gr = torch.autograd.grad(l_c, (matched, rolled))
    assert (gm < 0).all() and (gr > 0).all()  # right prompt up, rolled prompt down
    assert contrastive_d_loss(torch.tensor([9.0]), torch.tensor([-9.0])) < 1e-3  # perfect: nothing to learn


# --- rollouts are the stream ---------------------------------------------------------------------------------


def _stream(model, text, **params) -> LMDMStream:
    p = StreamParams.of("deep techno", sampler=SamplerSettings("pingpong", steps=STEPS), **params)
    return LMDMStream(model, text, seed=SEED, params=p, decode=False)


def _gens(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(block_seed(SEED, b)) for b in range(n)]


def _window_rollout(lmdm: LMDM, cond, n: int) -> torch.Tensor:
    """What ARC used to roll out through: the fixed-window masked pass, a fresh window every block."""
    io, c, t_len = lmdm.dit.cfg.io_channels, lmdm.cfg.context_frames, lmdm.cfg.block_frames
    frames = lmdm.new_state(1).frames
    ts = logsnr_schedule(STEPS)
    out = []
    for gen in _gens(n):
        x = torch.randn((1, io, t_len), generator=gen)
        for i in range(STEPS):
            x0 = x - ts[i] * lmdm.window_velocity(frames, x, torch.full((1,), ts[i]), cond)
            x = x0 if i == STEPS - 1 else x0 + ts[i + 1] * (torch.randn(x.shape, generator=gen) - x0)
        out.append(x)
        new = torch.cat([torch.ones(1, 1, t_len), x, frames.new_zeros(1, frames.shape[1] - 1 - io, t_len)], 1)
        frames = torch.cat([frames[..., t_len:], new], dim=2)[..., -c:]
    return torch.cat(out, dim=2)


@pytest.mark.parametrize("mode", ["causal", "encdec"])
def test_rollout_equals_the_stream(text, mode):
    """A rollout (every exit at the last step, the stream's seeds, gradient on) is the stream's latents."""
    model = LMDMModel.preset("tiny", lmdm=LMDMConfig(mode=mode, context_frames=12, block_frames=4), seed=1)
    stream = _stream(model, text)
    with torch.no_grad():
        live = torch.cat([stream.next_latents() for _ in range(BLOCKS)], dim=2)
    lmdm = LMDM(model.dit, model.lmdm)
    cond = stream._conditioning(stream.params)
    model.net.requires_grad_(True)
    try:
        rolled = rollout(lmdm, lmdm.new_state(1), cond, [STEPS] * BLOCKS, STEPS, _gens(BLOCKS))
    finally:
        model.net.requires_grad_(False)
    assert rolled.requires_grad  # the exit steps carry the gradient
    assert rolled.shape == live.shape == (1, 64, 4 * BLOCKS)
    assert rel_err(rolled.detach(), live) <= 1e-5
    with torch.no_grad():
        windowed = _window_rollout(lmdm, cond, BLOCKS)
    t_len = model.lmdm.block_frames
    assert rel_err(windowed[..., :t_len], live[..., :t_len]) <= 1e-5  # the first block agrees either way
    if mode == "causal":  # once the window slides, the masked pass is not what the stream computes
        assert rel_err(windowed[..., 2 * t_len :], live[..., 2 * t_len :]) > 1e-3


def _jam_model() -> LMDMModel:
    window = LMDMConfig(mode="causal", context_frames=12, block_frames=4)
    return LMDMModel.preset("tiny", lmdm=window, seed=2, extras={"accomp": True})


def _live_jam(model, text, accomp: torch.Tensor, t_f: int, blocks: int) -> torch.Tensor:
    """The stream as the live input drives a jam: each block, the context's accompaniment refreshed to
    what is visible now (t_f past the block start) and the block's own accompaniment channels."""
    c, t_len, io = model.lmdm.context_frames, model.lmdm.block_frames, model.dit.cfg.io_channels
    acc = model.layout.offsets()["accomp"]
    stream = _stream(model, text)
    out = []
    with torch.no_grad():
        for b in range(blocks):
            vis = torch.arange(c + t_len) < c + t_f
            win = accomp_channels(accomp[:, b * t_len : b * t_len + c + t_len], vis)
            stream.state.refresh(1 + io + acc.start, 1 + io + acc.stop, win[None, :, :c])
            out.append(stream.next_latents(accomp=win[:, c:]))
    return torch.cat(out, dim=2)


def test_jam_rollout_equals_the_live_stream_with_negative_t_f(text, monkeypatch):
    model = _jam_model()
    c, t_len = model.lmdm.context_frames, model.lmdm.block_frames
    accomp = torch.randn(64, c + BLOCKS * t_len, generator=torch.Generator().manual_seed(4))
    t_f = -2
    live = _live_jam(model, text, accomp, t_f, BLOCKS)
    lmdm = LMDM(model.dit, model.lmdm)
    layout = model.layout
    extras = layout.build(c + BLOCKS * t_len, accomp=accomp_channels(accomp))[None]
    plan = RolloutExtras(extras, layout.offsets()["accomp"], torch.tensor([t_f]))
    cond = _stream(model, text)._conditioning(StreamParams.of("deep techno"))
    with torch.no_grad():
        rolled = rollout(lmdm, lmdm.new_state(1), cond, [STEPS] * BLOCKS, STEPS, _gens(BLOCKS), plan)
    assert rel_err(rolled, live) <= 1e-5
    # the stale chunk (accompaniment revealed after it was cached) is recomputed: without it, other music
    monkeypatch.setattr(LMDM, "_stale_chunks", lambda self, state: 0)
    stale = _live_jam(model, text, accomp, t_f, BLOCKS)
    assert rel_err(stale[..., 2 * t_len :], live[..., 2 * t_len :]) > 1e-4


@torch.no_grad()
def test_stale_chunk_recompute_is_exact():
    """Accompaniment revealed over a chunk already in the cache: the fused step recomputes that chunk, and
    the block equals the uncached reference that recomputes every frame since the bootstrap with it."""
    model = _jam_model()
    c, t_len, io = model.lmdm.context_frames, model.lmdm.block_frames, model.dit.cfg.io_channels
    lmdm = LMDM(model.dit, model.lmdm)
    g = torch.Generator().manual_seed(7)
    cross, glob = model.net.conditioning(torch.randn(1, 5, 384, generator=g), [1.0])
    cond = Conditioning(model.dit.cross_kv(cross), glob)
    s = SamplerSettings("euler", steps=2)
    ctx = torch.randn(1, io, c, generator=g)
    cached, ref = lmdm.new_state(1, ctx), lmdm.new_state(1, ctx)
    for st, fast in ((cached, True), (ref, False)):
        lmdm.generate(st, cond, s, torch.Generator().manual_seed(0), cached=fast)
    acc = model.layout.offsets()["accomp"]
    lo, hi = 1 + io + acc.start, 1 + io + acc.stop
    revealed = torch.randn(hi - lo, t_len, generator=g)
    values = cached.frames[:, lo:hi].clone()
    values[..., c - 2 * t_len : c - t_len] = revealed  # the newest cached chunk, before the pending one
    cached.refresh(lo, hi, values)
    ref.history[0] = ref.history[0].clone()
    ref.history[0][:, lo:hi, c - t_len :] = revealed  # the same frames, in the reference's history
    assert lmdm._stale_chunks(cached) == 1
    a = lmdm.generate(cached, cond, s, torch.Generator().manual_seed(1))
    b = lmdm.generate(ref, cond, s, torch.Generator().manual_seed(1), cached=False)
    assert rel_err(a, b) <= 1e-5
    assert lmdm._stale_chunks(cached) == 0


def test_each_rollout_block_sees_the_accompaniment_t_f_past_its_own_start():
    c, t_len, rounds, e = 8, 4, 3, 3
    extras = torch.ones(2, e, c + rounds * t_len)
    plan = RolloutExtras(extras, slice(1, 3), torch.tensor([-2, 3]))
    for r in range(rounds):
        w = plan.window(r, c, t_len)
        assert (w[:, 0] == 1).all()  # other extras untouched
        for row, t_f in enumerate((-2, 3)):
            flag = w[row, 1]
            assert torch.equal(flag, (torch.arange(c + t_len) < c + t_f).float())  # same t_f every block
    rolled = plan.rolled()
    assert torch.equal(rolled[:, 0], extras[:, 0])
    varied = RolloutExtras(torch.arange(2.0)[:, None, None].expand(2, e, 5).clone(), slice(1, 3))
    assert torch.equal(varied.rolled()[:, 1:3, 0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


# --- the discriminator --------------------------------------------------------------------------------------


def test_discriminator_is_a_three_quarter_trunk_that_hears_the_accompaniment():
    model = _jam_model()  # depth 8
    disc = Discriminator.from_model(model)
    assert len(disc.dit.layers) == 6
    src = model.dit.state_dict()
    for k, v in disc.dit.state_dict().items():
        assert torch.equal(v, src[k]), k
    c, n = 12, 20
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 64, n, generator=g)
    cross, glob = model.net.conditioning(torch.randn(2, 5, 384, generator=g), [1.0, 1.0])
    layout = model.layout
    ext = layout.build(n, accomp=accomp_channels(torch.randn(64, n, generator=g)))[None].expand(2, -1, -1)
    with torch.no_grad():
        a = disc(y, torch.full((2,), 0.5), cross, glob, c, ext)
        b = disc(y, torch.full((2,), 0.5), cross, glob, c, torch.zeros_like(ext))
    assert a.shape == (2, (n - c) // 4)
    assert (a - b).abs().max() > 1e-3  # the accompaniment changes the verdict


def test_lambda_c_follows_the_paper():
    for mode, lam in (("causal", 2.0), ("encdec", 1.0)):
        model = small_model(mode)
        t = ARCTrainer(model, Discriminator.from_model(model), ARCConfig(rounds=1, steps=3, batch=2))
        assert t.lambda_c == lam


# --- the game moves -------------------------------------------------------------------------------------------


def _trainer(mode: str, lr: float) -> ARCTrainer:
    model = small_model(mode)
    disc = Discriminator.from_model(model)
    return ARCTrainer(model, disc, ARCConfig(rounds=3, steps=4, batch=4, lr_g=lr, lr_d=lr))


@pytest.mark.parametrize("mode", ["causal", "encdec"])
def test_a_generator_step_moves_its_rollouts_toward_real(mode):
    """On a fixed batch, rollout and noise, one G step lowers L_G: the discriminator scores the rollouts
    closer to (or above) the real windows than before. Only the generator moved."""
    trainer, data = _trainer(mode, 1e-4), patterned_set()
    d0 = [p.detach().clone() for p in trainer.d_params]
    before = trainer.losses(data, seed=11)
    trainer.g_step(data, seed=11)
    after = trainer.losses(data, seed=11)
    assert after["loss_g"] < before["loss_g"]
    assert all(torch.equal(a, b) for a, b in zip(d0, trainer.d_params, strict=True))


def test_a_discriminator_step_separates_real_from_rollouts():
    trainer, data = _trainer("causal", 1e-4), patterned_set()
    g0 = [p.detach().clone() for p in trainer.g_params]
    before = trainer.losses(data, seed=5)
    trainer.d_step(data, seed=5)
    after = trainer.losses(data, seed=5)
    assert after["loss_d"] < before["loss_d"]
    assert all(torch.equal(a, b) for a, b in zip(g0, trainer.g_params, strict=True))


def _caption_margin(trainer: ARCTrainer, data) -> float:
    """Mean D score of real windows under their own caption minus under the other kind's caption."""
    c = trainer.lmdm.cfg.context_frames
    n = c + trainer.cfg.rounds * trainer.lmdm.cfg.block_frames
    y = torch.stack([data.latents[i][:, :n] for i in range(8)])
    own, other = data.tokens[:8], data.tokens[[(i + 1) % 8 for i in range(8)]]  # kinds alternate
    s = torch.full((8,), 0.3)
    y_s = 0.7 * y + 0.3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = trainer.disc(y_s, s, *trainer.model.net.conditioning(own, [1.5] * 8), c)
        b = trainer.disc(y_s, s, *trainer.model.net.conditioning(other, [1.5] * 8), c)
    return float((a - b).mean())


def test_the_contrastive_term_tells_matched_from_mismatched_conditioning():
    """Two kinds of music under two captions: D steps teach the discriminator to score real windows
    higher under their own caption than under the other's (it starts at no preference)."""
    model = small_model("causal")
    cfg = ARCConfig(rounds=2, steps=3, batch=8, lr_g=5e-4, lr_d=5e-4)
    trainer, data = ARCTrainer(model, Discriminator.from_model(model), cfg), patterned_set()
    before = _caption_margin(trainer, data)
    for i in range(20):
        trainer.d_step(data, seed=100 + i)
    after = _caption_margin(trainer, data)
    assert abs(before) < 0.1 and after > 0.5
