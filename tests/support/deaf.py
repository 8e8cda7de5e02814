"""A model that cannot hear one group of its extra channels: what `eval tempo` and `eval sketch` are checked
against (nothing it computes depends on the group, so no variant of it can cost anything)."""

from __future__ import annotations

import torch

from lmdm_live.model.bundle import LMDMModel


def deafened(model: LMDMModel, group: str) -> LMDMModel:
    """`model` with the input weights of extras group `group` ("tempo", "sketch", ...) zeroed, in place."""
    sl = model.layout.offsets()[group]
    first = 1 + model.dit.cfg.io_channels  # the input_add columns: context flag, latents, then the extras
    with torch.no_grad():
        model.dit.to_input_add_embed.weight[:, first + sl.start : first + sl.stop] = 0.0
    return model


def assert_flat(report: dict) -> None:
    """Every variant of a report scored the same, with the context and without."""
    for label in ("with context", "no context"):
        losses = list(report[label].values())
        assert max(losses) - min(losses) < 1e-6, report[label]
