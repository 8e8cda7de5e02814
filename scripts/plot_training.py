"""Draw the default model's training curves for docs/default-model.md from the run folders' progress.json.

    .venv/bin/python scripts/plot_training.py runs/m17 docs/img/m17-training.png

Stage 1: the velocity loss, each point the mean of 200 steps. ARC-Forcing: the discriminator, generator and
contrastive losses per iteration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

WINDOW = 200


def main(runs: Path, out: Path) -> None:
    stage1 = json.loads((runs / "stage1" / "progress.json").read_text())["history"]
    arc = json.loads((runs / "arc" / "progress.json").read_text())["history"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    h = np.asarray(stage1, dtype=np.float64)
    n = len(h) // WINDOW
    steps = (np.arange(n) + 1) * WINDOW
    a.plot(steps, h[: n * WINDOW].reshape(n, WINDOW).mean(1))
    a.set(title="stage 1: velocity loss (200-step means)", xlabel="step", ylabel="loss")
    a.grid(alpha=0.3)
    for key, label in (("loss_d", "D"), ("loss_g", "G"), ("loss_contrastive", "contrastive")):
        b.plot(np.arange(1, len(arc) + 1), [r[key] for r in arc], label=label)
    b.axhline(np.log(2), color="grey", lw=0.8, ls="--", label="log 2")
    b.set(title="ARC-Forcing through the cache", xlabel="iteration", ylabel="loss")
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_training.py RUNS_DIR OUT.png")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
