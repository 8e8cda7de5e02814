"""Matching a recording against the samples that were meant to be played, where a busy server may have
dropped or repeated a period of its own."""

from __future__ import annotations

import numpy as np

from lmdm_live.audio.tone import locate


def exact_pieces(
    reference: np.ndarray, recorded: np.ndarray, probe: int = 256, skips: int = 0, repeats: int = 0
) -> list[tuple[int, int]] | None:
    """Cut `recorded` into the fewest stretches that each equal a stretch of `reference`, in order.

    Where a stretch ends, up to `repeats` times a `probe`-long period that repeats the one just recorded
    is stepped over (the server played a late client's last period again), and up to `skips` times one
    that matches nowhere (a period the server filled itself: the instrument never played it, so no replay
    can hold it). A stretch that goes on where the last one stopped joins it.
    Returns [(offset in reference, length)], or None when some part matches nowhere."""
    pieces: list[tuple[int, int]] = []
    i, start = 0, 0
    while i < len(recorded):
        head = recorded[i : i + probe]
        at = locate(reference[start:], head)
        if at is None:
            if repeats > 0 and i >= probe and np.array_equal(head, recorded[i - probe : i]):
                repeats -= 1
            elif skips > 0:
                skips -= 1
            else:
                return None
            i += probe
            continue
        at += start
        n = min(len(recorded) - i, len(reference) - at)
        same = np.all(reference[at : at + n] == recorded[i : i + n], axis=1)
        length = int(np.argmin(same)) if not same.all() else n
        if pieces and sum(pieces[-1]) == at:
            pieces[-1] = (pieces[-1][0], pieces[-1][1] + length)
        else:
            pieces.append((at, length))
        i, start = i + length, at + length
    return pieces
