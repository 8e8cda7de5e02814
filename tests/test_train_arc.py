"""ARC-Forcing: the loss terms push the right way, and one step trains the generator and the discriminator."""

from __future__ import annotations

import torch
from test_train_stage1 import patterned_set, small_model

from lmdm_live.model.lmdm import LMDM, Conditioning
from lmdm_live.train.arc import (
    ARCConfig,
    ARCTrainer,
    Discriminator,
    contrastive_d_loss,
    relativistic_d_loss,
    relativistic_g_loss,
    rollout,
)


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


def test_rollout_and_discriminator_shapes():
    model = small_model("causal")
    lmdm = LMDM(model.dit, model.lmdm)
    cross, glob = model.net.conditioning(torch.randn(2, 5, 16), [1.5, 1.5])
    cond = Conditioning(model.dit.cross_kv(cross), glob)
    frames = torch.cat([torch.ones(2, 1, 16), torch.randn(2, 8, 16)], dim=1)
    for p in model.net.parameters():
        p.requires_grad_(True)
    blocks = rollout(lmdm, frames, cond, rounds=3, steps=4, gen=torch.Generator().manual_seed(0))
    assert blocks.shape == (2, 8, 24) and blocks.requires_grad
    blocks.square().mean().backward()
    assert model.dit.transformer.project_out.weight.grad.abs().sum() > 0
    disc = Discriminator.from_generator(model, layers=1)
    scores = disc(torch.randn(2, 8, 40), torch.rand(2), cross.detach(), glob.detach(), start=16)
    assert scores.shape == (2, 24 // 4)


def test_one_arc_step_updates_g_and_d():
    model = small_model("encdec")
    disc = Discriminator.from_generator(model, layers=1)
    trainer = ARCTrainer(model, disc, ARCConfig(rounds=2, steps=4, batch=2, lr_g=1e-3, lr_d=1e-3))
    data = patterned_set()
    g0 = [p.detach().clone() for p in trainer.g_params]
    d0 = [p.detach().clone() for p in trainer.d_params]

    def changed(before, params):
        return sum(not torch.equal(a, b) for a, b in zip(before, params, strict=True))

    out = trainer.g_step(data)
    assert out["loss_g"] > 0
    assert changed(g0, trainer.g_params) > 0 and changed(d0, trainer.d_params) == 0
    assert model.dit.transformer.project_out.weight.grad.abs().sum() > 0  # a real gradient, not just decay
    g1 = [p.detach().clone() for p in trainer.g_params]
    out = trainer.d_step(data)
    assert out["loss_d"] > 0 and out["loss_contrastive"] > 0
    assert changed(d0, trainer.d_params) > 0 and changed(g1, trainer.g_params) == 0
    assert disc.head.out.weight.grad.abs().sum() > 0 and disc.dit.to_cond_embed[0].weight.grad.abs().sum() > 0
