"""AudioRing: exact frame order through wrap-around, underrun accounting, and SPSC use by two real threads."""

import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

from lmdm_live.audio import AudioRing


def _frames(start: int, n: int, channels: int = 2) -> np.ndarray:
    """Frame i holds (i, -i, ...): every frame is recognisable, exactly, in float32 (i < 2**24)."""
    i = np.arange(start, start + n, dtype=np.float32)
    return np.stack([i * (1 if c % 2 == 0 else -1) for c in range(channels)], axis=1)


def test_write_read_wraps_around_and_keeps_order():
    ring = AudioRing(2, 10)
    out = np.empty((4, 2), np.float32)
    written = read = 0
    for _ in range(20):  # 20 x 4 frames through a 10-frame ring: wraps many times, at every offset
        written += ring.write(_frames(written, 4))
        assert ring.read_into(out) == 4
        assert np.array_equal(out, _frames(read, 4))
        read += 4
    assert ring.frames_written == ring.frames_read == 80
    assert ring.fill == 0 and ring.free == 10
    assert ring.underruns == 0


def test_write_takes_only_what_fits():
    ring = AudioRing(2, 10)
    assert ring.write(_frames(0, 7)) == 7
    assert ring.write(_frames(7, 7)) == 3  # only 3 free
    assert ring.fill == 10 and ring.free == 0
    assert ring.write(_frames(10, 1)) == 0
    out = np.empty((10, 2), np.float32)
    assert ring.read_into(out) == 10
    assert np.array_equal(out, _frames(0, 10))


def test_write_checks_shape_and_converts_float64():
    ring = AudioRing(2, 8)
    with pytest.raises(ValueError):
        ring.write(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError):
        ring.write(np.zeros(4, np.float32))
    assert ring.write(np.full((2, 2), 0.25, dtype=np.float64)) == 2
    out = np.empty((2, 2), np.float32)
    ring.read_into(out)
    assert np.all(out == 0.25)


def test_underrun_zero_fills_and_counts():
    ring = AudioRing(2, 16)
    ring.write(_frames(1, 3))
    out = np.full((8, 2), 7.0, np.float32)
    assert ring.read_into(out) == 3
    assert np.array_equal(out[:3], _frames(1, 3))
    assert np.all(out[3:] == 0.0), "what the ring could not supply must be silence"
    assert (ring.underruns, ring.underrun_frames) == (1, 5)
    out[:] = 7.0
    assert ring.read_into(out) == 0  # empty ring: all silence
    assert np.all(out == 0.0)
    assert (ring.underruns, ring.underrun_frames) == (2, 13)
    ring.reset_stats()
    assert (ring.underruns, ring.underrun_frames) == (0, 0)
    ring.write(_frames(0, 8))
    ring.read_into(out)
    assert ring.underruns == 0


def test_fill_min_is_the_worst_headroom_since_reset():
    ring = AudioRing(1, 100)
    assert ring.fill_min == 100  # nothing read yet
    ring.write(np.zeros((90, 1), np.float32))
    out = np.empty((30, 1), np.float32)
    ring.read_into(out)  # 60 left
    ring.read_into(out)  # 30 left
    ring.write(np.zeros((50, 1), np.float32))
    ring.read_into(out)  # 50 left
    assert ring.fill_min == 30
    ring.reset_stats()
    assert ring.fill_min == 100
    ring.read_into(out)  # 20 left
    assert ring.fill_min == 20


def test_clear_drops_buffered_frames_and_keeps_totals_consistent():
    ring = AudioRing(2, 16)
    ring.write(_frames(0, 12))
    ring.clear()
    assert ring.fill == 0
    assert ring.frames_written == ring.frames_read == 12
    ring.write(_frames(12, 4))
    out = np.empty((4, 2), np.float32)
    assert ring.read_into(out) == 4
    assert np.array_equal(out, _frames(12, 4))


def test_read_into_never_raises():
    ring = AudioRing(2, 16)
    ring.write(_frames(0, 8))
    bad = np.full((4, 3), 5.0, np.float32)  # wrong channel count
    assert ring.read_into(bad) == 0
    assert ring.read_errors == 1
    assert np.all(bad == 0.0)


def test_read_into_allocates_no_arrays():
    ring = AudioRing(2, 48000)
    out = np.empty((4096, 2), np.float32)
    ring.write(np.ones((48000, 2), np.float32))
    ring.read_into(out)  # warm up any lazily created state
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(200):
            ring.read_into(out)  # wraps, then underruns: every code path
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert ring.underruns > 0
    assert peak < out.nbytes // 4, f"read_into allocated {peak} bytes at peak (a block is {out.nbytes})"


def test_spsc_two_threads_preserve_every_frame():
    """1e6 frames, random chunk sizes on both sides, a ring small enough to wrap and run full and dry."""
    total = 1_000_000
    ring = AudioRing(2, 4096)
    got = np.zeros((total, 2), np.float32)
    short_reads = 0
    errors: list[BaseException] = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: interleave the two sides at many points

    def producer():
        rng = np.random.default_rng(1)
        pos = 0
        try:
            while pos < total:
                n = int(rng.integers(1, 1500))
                block = _frames(pos, min(n, total - pos))
                done = 0
                while done < len(block):
                    done += ring.write(block[done:])
                    if done < len(block):
                        time.sleep(0)
                pos += len(block)
        except BaseException as e:
            errors.append(e)

    def consumer():
        nonlocal short_reads
        rng = np.random.default_rng(2)
        scratch = np.empty((1500, 2), np.float32)
        pos = 0
        deadline = time.monotonic() + 120
        try:
            while pos < total and time.monotonic() < deadline:
                out = scratch[: int(rng.integers(1, 1500))]
                n = ring.read_into(out)
                assert np.all(out[n:] == 0.0)
                got[pos : pos + n] = out[:n]
                pos += n
                if n < len(out):
                    short_reads += 1
                    time.sleep(0)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
    finally:
        sys.setswitchinterval(old_interval)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "the threads did not finish"
    assert ring.frames_written == ring.frames_read == total
    first_bad = np.nonzero(np.any(got != _frames(0, total), axis=1))[0]
    assert len(first_bad) == 0, f"frame {first_bad[:1]} differs: order or content was not preserved"
    assert ring.underruns == short_reads, "every short read must be counted as an underrun"
    assert ring.read_errors == 0


def test_consumer_starved_by_a_slow_producer_counts_underruns():
    ring = AudioRing(1, 1024)
    stop = threading.Event()

    def slow_producer():
        while not stop.is_set():
            ring.write(np.ones((64, 1), np.float32))
            time.sleep(0.01)  # 6400 frames/s, far below what the consumer takes

    t = threading.Thread(target=slow_producer)
    t.start()
    out = np.empty((256, 1), np.float32)
    try:
        for _ in range(50):
            ring.read_into(out)
            time.sleep(0.002)
    finally:
        stop.set()
        t.join()
    assert ring.underruns > 0
    assert ring.underrun_frames > 0
    assert ring.fill_min == 0
