"""The output limiter: no sample past the ceiling, quiet audio untouched, the gain falls before a peak it
can see and comes back after it, block by block as in one piece, and the output chain's snapshot holds it."""

import numpy as np
import pytest

from lmdm_live.dsp.limiter import Limiter, LimiterConfig
from lmdm_live.live.output import OutputChain

SR = 44100


def _music(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Stereo tones with a few bursts far over full scale (as an overshooting model makes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.4 * np.sin(2 * np.pi * 110 * t)[:, None] + 0.1 * rng.standard_normal((t.size, 2))
    for start, level in ((20000, 6.0), (61000, 15.0), (100500, 3.0)):
        x[start : start + 300] *= level
    return x.astype(np.float32)


def _blocks(lim: Limiter, x: np.ndarray, block: int, ahead: int) -> np.ndarray:
    return np.concatenate(
        [lim.process(x[i : i + block], x[i + block : i + block + ahead]) for i in range(0, len(x), block)]
    )


@pytest.mark.parametrize("ceiling", [0.98, 0.5])
def test_no_sample_passes_the_ceiling_in_blocks_of_any_size(ceiling):
    x = _music()
    assert np.abs(x).max() > 5 * ceiling
    for block, ahead in ((8192, 441), (1000, 0), (37, 5)):
        y = _blocks(Limiter(SR, LimiterConfig(ceiling=ceiling)), x, block, ahead)
        assert y.shape == x.shape
        assert np.abs(y).max() <= ceiling * (1 + 1e-6)
        assert np.abs(y).max() > 0.9 * ceiling  # it limits the peaks; it does not just turn everything down


def test_quiet_audio_passes_bit_exact():
    x = 0.5 * _music()
    x = np.clip(x, -0.9, 0.9)
    lim = Limiter(SR)
    assert np.array_equal(_blocks(lim, x, 4096, 441), x)
    assert lim.reduction_db == 0.0 and lim.gain == 1.0


def test_the_gain_falls_ahead_of_a_peak_and_comes_back_after_it():
    x = np.full((SR, 1), 0.5, np.float32)
    x[22050:22060] = 4.0  # one burst, 12 dB over the ceiling
    lim = Limiter(SR, LimiterConfig(release_ms=100.0))
    y = _blocks(lim, x, 8192, 441)
    gain = y[:, 0] / x[:, 0]
    assert np.array_equal(gain[:20000], np.ones(20000, np.float32))  # untouched well before it
    assert gain[22050 - 100] < 0.9  # already falling 2 ms before the burst (seen in the lookahead)
    assert gain[22050 - 1000] > 0.999  # but not 20 ms before it
    assert gain[22050:22060].max() <= 0.98 / 4.0 + 1e-6
    assert np.abs(np.diff(gain)).max() < 0.05  # no step: the gain moves smoothly
    assert 0.5 < gain[22060 + int(0.1 * SR)] < 0.9  # coming back over the release...
    assert gain[-1] > 0.99  # ...and back by the end
    assert lim.reduction_db < 0.1  # the last block is all but untouched


def test_a_peak_it_could_not_see_is_still_held_under_the_ceiling():
    x = np.full((4096, 1), 0.5, np.float32)
    x[0:5] = 3.0  # at the very start of a block, with nothing known ahead of the last one
    lim = Limiter(SR)
    lim.process(np.full((4096, 1), 0.5, np.float32))
    y = lim.process(x)
    assert np.abs(y).max() <= 0.98 * (1 + 1e-6)
    assert lim.reduction_db == pytest.approx(20 * np.log10(3.0 / 0.98), abs=0.05)


def test_bad_configs_are_refused():
    for kw in ({"ceiling": 0.0}, {"ceiling": 1.5}, {"release_ms": 0.0}, {"chunk": 0}):
        with pytest.raises(ValueError):
            LimiterConfig(**kw)


def test_output_chain_limits_what_it_emits_and_its_snapshot_restores_the_limiter():
    x = _music(2.0, seed=1).T[:1]  # (1, n) model audio
    chain = OutputChain(SR, SR, 2, limiter=LimiterConfig())
    parts = [chain.push(x[:, i : i + 8192]) for i in range(0, 40960, 8192)]
    snap = chain.snapshot()
    tail = [chain.push(x[:, i : i + 8192]) for i in range(40960, x.shape[1], 8192)]
    chain.restore(snap)
    again = [chain.push(x[:, i : i + 8192]) for i in range(40960, x.shape[1], 8192)]
    out = np.concatenate(parts + tail)
    assert np.abs(out).max() <= 0.98 * (1 + 1e-6) and np.abs(x).max() > 5
    assert all(np.array_equal(a, b) for a, b in zip(tail, again, strict=True))
    plain = OutputChain(SR, SR, 2)
    raw = np.concatenate([plain.push(x[:, i : i + 8192]) for i in range(0, x.shape[1], 8192)])
    assert np.abs(raw).max() > 5  # without the limiter the bursts go out as they are
