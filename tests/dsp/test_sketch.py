"""Sketch controls: pitch follows a synthetic hum, noise and silence stay unvoiced, the stream equals the
offline curves, loudness and centroid move the right way, the median removes a glitch, bad input raises."""

import numpy as np
import pytest

from lmdm_live.dsp.sketch import Controls, SketchConfig, SketchTracker, _causal_median, control_curves

SR, HOP = 16000, 512


def _tone(f0: np.ndarray, amps=(1.0, 0.5, 0.3, 0.15), sr: int = SR) -> np.ndarray:
    """A harmonic tone following the per-sample fundamental f0 (Hz)."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amps))


def _hum(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4 s: a glide 200 -> 400 Hz with 5 Hz vibrato, two silent gaps, breath noise over one of them.

    Returns the audio, the true MIDI pitch per sample and the mask of samples that are sung."""
    rng = np.random.default_rng(seed)
    t = np.arange(4 * SR) / SR
    f0 = 200 * 2 ** (t / 4) * 2 ** (0.25 / 12 * np.sin(2 * np.pi * 5 * t))
    sung = ~(((t >= 1.2) & (t < 1.5)) | ((t >= 2.6) & (t < 2.9)))
    env = np.convolve(sung.astype(float), np.hanning(161) / np.hanning(161).sum(), mode="same")
    x = 0.2 * env * _tone(f0)
    breath = (t >= 2.6) & (t < 2.9)
    x[breath] += 0.02 * rng.standard_normal(breath.sum())  # -34 dBFS of breath
    x += 1e-4 * rng.standard_normal(len(x))  # room noise
    return x.astype(np.float32), 69 + 12 * np.log2(f0 / 440), sung


def _frames(a: np.ndarray, n: int) -> np.ndarray:
    return a[: n * HOP].reshape(n, HOP)


def _chunked(tracker: SketchTracker, x: np.ndarray, seed: int) -> Controls:
    rng = np.random.default_rng(seed)
    parts, i, out = [], 0, 0
    while i < len(x):
        n = int(rng.choice([0, 1, 7, 256, 511, 512, int(rng.integers(1, 6000))]))
        parts.append(tracker.push(x[i : i + n]))
        i, out = i + n, out + len(parts[-1])
        # Causal, and never later than the latency it states.
        hop = tracker.cfg.hop
        assert (min(i, len(x)) - tracker.latency_samples) // hop <= out <= min(i, len(x)) // hop
    return Controls.concat(parts)


@pytest.fixture(scope="module")
def hum():
    x, truth, sung = _hum()
    return x, truth, sung, control_curves(x)


def test_shapes_and_types(hum):
    x, _, _, c = hum
    assert len(c) == len(x) // HOP
    assert c.as_array().shape == (4, len(c)) and c.as_array().dtype == np.float32
    for a in (c.pitch_midi, c.voiced, c.loudness_db, c.centroid_hz):
        assert a.dtype == np.float32 and a.shape == (len(c),)
    assert set(np.unique(c.voiced)) <= {0.0, 1.0}
    assert np.all(c.pitch_midi[c.voiced == 0] == 0)
    assert len(control_curves(x[: HOP - 1])) == 0
    assert len(control_curves(x[: 3 * HOP + 5])) == 3


def test_hum_pitch(hum):
    x, truth, sung, c = hum
    n = len(c)
    frame_truth = _frames(truth, n).mean(axis=1)
    fully_sung = _frames(sung, n).all(axis=1)
    v = c.voiced > 0
    # The hum is found where it is sung, and nothing is voiced in the gaps (breath included).
    assert v[fully_sung].mean() >= 0.9
    assert not v[~_frames(sung, n).any(axis=1)].any()
    # The causal median delays the curve by (median - 1) / 2 = 2 frames: compare with the truth as due.
    due = np.concatenate([np.full(2, frame_truth[0]), frame_truth[:-2]])
    err = np.abs(c.pitch_midi[v] - due[v])
    assert (err <= 0.5).mean() >= 0.9, f"median error {np.median(err):.3f} st"
    assert np.corrcoef(c.pitch_midi[v], due[v])[0, 1] >= 0.95
    # Unfiltered, the curve follows the truth without delay.
    raw = control_curves(x, SketchConfig(median=1))
    rv = raw.voiced > 0
    raw_err = np.abs(raw.pitch_midi[rv] - frame_truth[rv])
    assert (raw_err <= 0.5).mean() >= 0.9, f"median error {np.median(raw_err):.3f} st"
    assert np.corrcoef(raw.pitch_midi[rv], frame_truth[rv])[0, 1] >= 0.95


def test_silence_and_noise_are_unvoiced():
    rng = np.random.default_rng(1)
    silence = np.zeros(2 * SR, np.float32)
    c = control_curves(silence)
    assert not c.voiced.any() and not c.pitch_midi.any() and not c.centroid_hz.any()
    assert np.all(c.loudness_db == -80.0)
    for level in (0.003, 0.03):  # -50 and -30 dBFS of white noise
        c = control_curves((level * rng.standard_normal(2 * SR)).astype(np.float32))
        assert not c.voiced.any(), f"noise at {level} voiced"
        assert np.all(c.pitch_midi == 0)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_stream_equals_offline(hum, sr):
    x = hum[0]
    cfg = SketchConfig(sample_rate=sr, hop=HOP * sr // SR // 2 * 2)
    if sr != SR:
        from scipy.signal import resample_poly

        x = resample_poly(x, sr // 100, SR // 100)[: 2 * sr].astype(np.float32)
    offline = control_curves(x, cfg)
    for seed in range(2):
        tracker = SketchTracker(cfg)
        streamed = _chunked(tracker, x, seed)
        assert 0 < len(streamed) <= len(offline)
        np.testing.assert_array_equal(streamed.as_array(), offline.as_array()[:, : len(streamed)])
        # The rest comes out once the latency has passed (here: silence, as offline assumes).
        rest = tracker.push(np.zeros(tracker.latency_samples, np.float32))
        total = Controls.concat([streamed, rest])
        assert len(total) >= len(offline)
        np.testing.assert_array_equal(total.as_array()[:, : len(offline)], offline.as_array())
    # reset() starts a new signal.
    tracker.reset()
    again = _chunked(tracker, x, 5)
    np.testing.assert_array_equal(again.as_array(), offline.as_array()[:, : len(again)])


def test_latency_is_exact():
    tracker = SketchTracker()
    assert tracker.latency_samples == 2560  # ten 16 ms pitch frames after the frame's last pitch frame
    x = _hum()[0]
    for i in (0, 7):
        tracker.reset()
        end = (i + 1) * HOP + tracker.latency_samples
        assert len(tracker.push(x[: end - 1])) == i
        assert len(tracker.push(x[end - 1 : end])) == 1


def test_louder_copy(hum):
    x, _, _, c = hum
    louder = control_curves(x * 4)
    on = c.loudness_db > -60
    np.testing.assert_allclose(louder.loudness_db[on] - c.loudness_db[on], 20 * np.log10(4), atol=1e-3)
    # A sine's RMS level: full scale reads -3 dBFS.
    sine = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)
    np.testing.assert_allclose(control_curves(sine).loudness_db, 20 * np.log10(0.5 / np.sqrt(2)), atol=0.01)


def test_brighter_signal_has_higher_centroid():
    f0 = np.full(2 * SR, 220.0)
    dull = control_curves(0.3 * _tone(f0, (1.0, 0.2, 0.05)))
    bright = control_curves(0.3 * _tone(f0, (1.0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8)))
    assert np.all(bright.centroid_hz[2:] > dull.centroid_hz[2:] + 300)
    # A pure tone's centroid sits on it.
    sine = control_curves(0.3 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR))
    np.testing.assert_allclose(sine.centroid_hz, 1000, rtol=0.02)


def test_median_removes_octave_glitch():
    note = 69 + 12 * np.log2(220 / 440)
    raw = np.full(12, note)
    raw[6] += 12  # one frame an octave up
    raw[[2, 9]] = np.nan  # unvoiced frames are skipped, not counted as 0
    rows = np.stack([raw, raw])
    off, _ = _causal_median(rows, np.full((2, 0), np.nan))
    np.testing.assert_array_equal(off, rows)
    on, _ = _causal_median(rows, np.full((2, 4), np.nan))
    np.testing.assert_array_equal(np.isnan(on), np.isnan(rows))
    assert np.allclose(on[~np.isnan(on)], note)
    # Chunked calls carry the history: the same result frame by frame.
    hist, parts = np.full((2, 4), np.nan), []
    for j in range(12):
        part, hist = _causal_median(rows[:, j : j + 1], hist)
        parts.append(part)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), on)

    # End to end: a 48 ms octave jump in a sung note shows in one or two raw frames; median 5 removes it.
    f0 = np.full(2 * SR, 220.0)
    f0[20 * HOP : 20 * HOP + 768] = 440.0
    x = (0.2 * _tone(f0)).astype(np.float32)
    glitch = np.abs(control_curves(x, SketchConfig(median=1)).pitch_midi - (note + 12)) < 1
    assert 1 <= glitch.sum() <= 2
    med = control_curves(x, SketchConfig(median=5))
    v = med.voiced > 0
    assert v[2:-2].all()
    assert np.all(np.abs(med.pitch_midi[v] - note) < 0.5), med.pitch_midi[17:24]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"hop": -512},
        {"hop": 512.0},
        {"median": 4},
        {"median": 0},
        {"confidence": 1.5},
        {"confidence": float("nan")},
        {"floor_db": 3.0},
        {"min_db": -90.0},
    ],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        SketchConfig(**kwargs)


def test_bad_audio_raises():
    tracker = SketchTracker()
    for bad in (np.zeros((2, 1000), np.float32), np.array([0.0, np.nan]), np.zeros(10, np.int16)):
        with pytest.raises(ValueError):
            control_curves(bad)
        with pytest.raises(ValueError):
            tracker.push(bad)
    with pytest.raises(ValueError):
        control_curves(np.zeros(1000), cfg=16000)
    assert len(tracker.push(np.zeros(0, np.float32))) == 0
