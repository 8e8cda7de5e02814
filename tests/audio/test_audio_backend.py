"""The backend interface: callback statistics, and open_backend's choice when nothing can play."""

import time

import pytest

from lmdm_live.audio import CallbackStats, NoAudioDevice, open_backend
from lmdm_live.audio.backend import BackendUnavailable


def test_callback_stats_track_last_mean_and_max():
    stats = CallbackStats()
    assert stats.mean_ms == 0.0
    t = time.perf_counter()
    stats.add(t, t + 0.001)
    stats.add(t, t + 0.003)
    assert stats.callbacks == 2
    assert stats.last_ms == pytest.approx(3.0)
    assert stats.max_ms == pytest.approx(3.0)
    assert stats.mean_ms == pytest.approx(2.0)
    stats.reset()
    assert (stats.callbacks, stats.max_ms, stats.total_ms) == (0, 0.0, 0.0)


def test_no_device_anywhere_raises_a_one_line_hint(monkeypatch):
    from lmdm_live.audio import JackBackend, SoundDeviceBackend

    monkeypatch.setattr(JackBackend, "available", classmethod(lambda cls, **kw: False))
    monkeypatch.setattr(SoundDeviceBackend, "available", classmethod(lambda cls, **kw: False))
    with pytest.raises(NoAudioDevice) as info:
        open_backend(None, channels=2)
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, BackendUnavailable)
    assert "\n" not in msg
    assert "no audio device" in msg and "--backend file --out x.wav" in msg
    assert info.value.tried == ["jack: none", "sounddevice: none"]  # the reasons, for a verbose report
