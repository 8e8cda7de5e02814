"""StreamResampler: chunking never changes the output, and a sine keeps its frequency and level."""

import numpy as np
import pytest
from scipy.signal import upfirdn

from lmdm_live.audio import StreamResampler, dominant_hz, sine_frames

RATE_PAIRS = [(44100, 48000), (48000, 44100), (32000, 48000), (48000, 16000)]


def _noise(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)


def _whole(rs: StreamResampler, x: np.ndarray) -> np.ndarray:
    return np.concatenate([rs.process(x), rs.flush()])


def _chunked(rs: StreamResampler, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.choice([0, 1, 2, 3, int(rng.integers(4, 3000))]))
        out.append(rs.process(x[i : i + n]))
        i += n
    out.append(rs.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_chunked_equals_whole(in_rate, out_rate):
    x = _noise(in_rate // 2)
    whole = _whole(StreamResampler(in_rate, out_rate, 2), x)
    for seed in range(3):
        chunked = _chunked(StreamResampler(in_rate, out_rate, 2), x, seed)
        assert chunked.shape == whole.shape
        assert np.max(np.abs(chunked - whole)) <= 1e-6


def test_ratio_is_reduced_and_output_matches_a_whole_signal_polyphase_filter():
    rs = StreamResampler(44100, 48000, 2)
    assert (rs.up, rs.down) == (160, 147)
    x = _noise(20000)
    ours = _whole(rs, x)
    ref = upfirdn(rs.taps, x.astype(np.float64), rs.up, rs.down, axis=0)
    n = min(len(ours), len(ref))
    assert n >= len(ref) - 1
    assert np.max(np.abs(ours[:n] - ref[:n])) < 1e-5
    assert np.all(ours[n:] == 0.0)


def test_state_carries_over_and_flush_resets():
    rs = StreamResampler(44100, 48000, 1)
    x = _noise(5000, channels=1)
    first = _whole(rs, x)
    again = _whole(rs, x)  # after flush() the next signal starts from silence again
    assert np.array_equal(first, again)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_sine_keeps_frequency_and_level(in_rate, out_rate):
    freq = 1000.0
    x = sine_frames(0, in_rate * 2, in_rate, [freq, freq], amp=0.5)
    rs = StreamResampler(in_rate, out_rate, 2)
    y = _chunked(rs, x, seed=5)
    edge = int(rs.latency_frames) + out_rate // 10  # leave out the filter's fade-in and fade-out
    body = y[edge : int(2 * out_rate) - edge]
    assert len(body) > out_rate
    for c in range(2):
        peak = dominant_hz(body[:, c], out_rate)
        assert peak == pytest.approx(freq, abs=1.0)
        rms_in = np.sqrt(np.mean(x[:, c].astype(np.float64) ** 2))
        rms_out = np.sqrt(np.mean(body[:, c].astype(np.float64) ** 2))
        assert rms_out == pytest.approx(rms_in, rel=0.01)


def test_output_length_follows_the_ratio():
    rs = StreamResampler(44100, 48000, 2)
    x = _noise(44100)
    body = rs.process(x)
    assert abs(len(body) - 48000) <= 1  # one second in, one second out
    tail = rs.flush()
    assert 0 < len(tail) <= 2 * rs.latency_frames + 2


def test_latency_frames_is_where_an_impulse_comes_out():
    for in_rate, out_rate in RATE_PAIRS:
        rs = StreamResampler(in_rate, out_rate, 1)
        x = np.zeros((4000, 1), np.float32)
        x[0] = 1.0
        y = _whole(rs, x)[:, 0]
        assert abs(int(np.argmax(y)) - rs.latency_frames) <= 1.0, (in_rate, out_rate)


def test_equal_rates_pass_through():
    rs = StreamResampler(48000, 48000, 2)
    x = _noise(1000)
    assert rs.identity and rs.latency_frames == 0.0
    assert np.array_equal(rs.process(x), x)
    assert rs.process(x.astype(np.float64)).dtype == np.float32
    assert rs.flush().shape == (0, 2)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        StreamResampler(0, 48000, 2)
    rs = StreamResampler(44100, 48000, 2)
    with pytest.raises(ValueError):
        rs.process(np.zeros((10, 1), np.float32))
    assert rs.process(np.zeros((0, 2), np.float32)).shape == (0, 2)
