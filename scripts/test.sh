#!/usr/bin/env bash
# Run lint and the test suite against a private JACK server (dummy driver, no sound card needed).
# Extra arguments go to one plain pytest run instead of the two phases below, e.g.
#   bash scripts/test.sh -m slow   or   bash scripts/test.sh -k jack
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

export JACK_NO_START_SERVER=1
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

# jack_wait -c exits 0 either way; it prints "running" or "not running".
jack_running() { [[ "$(jack_wait -c -s "$1" 2>/dev/null)" == "running" ]]; }

# A server name of our own, so we never talk to (or clash with) another jackd on this machine.
JACK_DEFAULT_SERVER="lmdm-test"
if jack_running "$JACK_DEFAULT_SERVER"; then
    JACK_DEFAULT_SERVER="lmdm-test-$$"  # another test run holds the name
fi
export JACK_DEFAULT_SERVER

JACK_LOG="$(mktemp -t lmdm-jackd.XXXXXX.log)"
jackd -n "$JACK_DEFAULT_SERVER" --no-realtime -d dummy -r 48000 -p 256 >"$JACK_LOG" 2>&1 &
JACKD_PID=$!

cleanup() {
    if kill -0 "$JACKD_PID" 2>/dev/null; then
        kill "$JACKD_PID" 2>/dev/null || true
        wait "$JACKD_PID" 2>/dev/null || true
    fi
    rm -f "$JACK_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

up=0
for _ in $(seq 1 100); do  # 100 x 0.2 s = 20 s
    if ! kill -0 "$JACKD_PID" 2>/dev/null; then
        break
    fi
    if jack_running "$JACK_DEFAULT_SERVER"; then
        up=1
        break
    fi
    sleep 0.2
done
if ((!up)); then
    if kill -0 "$JACKD_PID" 2>/dev/null; then why="did not come up within 20 s"; else why="exited at start"; fi
    echo "error: the private JACK server '$JACK_DEFAULT_SERVER' $why. jackd log:" >&2
    sed 's/^/    /' "$JACK_LOG" >&2
    exit 1
fi
echo "[test] JACK server '$JACK_DEFAULT_SERVER' is up (dummy driver, 48 kHz, 256 frames)" >&2

status=0
echo "[test] ruff check ." >&2
.venv/bin/ruff check . || status=1

# Any non-zero pytest exit fails the run, including 5 ("no tests collected").
if (($#)); then
    echo "[test] pytest $*" >&2
    .venv/bin/python -m pytest -q "$@" || status=$?
else
    # The offline tests (training, evaluation, the model, DSP, the stream) are bound by the CPU alone: they
    # run two at a time, one torch thread each, a module to a worker so its fixtures are built once. The
    # tests that play in real time (JACK, OSC, MIDI, the engine, the CLI) then run one at a time with the
    # machine to themselves, as their timing needs. Each phase lists its slowest tests, to keep the run short.
    OFFLINE=(tests/eval tests/train tests/model tests/dsp tests/test_layers.py tests/live/test_stream.py)
    echo "[test] pytest, offline tests on two workers: ${OFFLINE[*]}" >&2
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -n 2 --dist loadscope --durations=10 "${OFFLINE[@]}" || status=$?
    echo "[test] pytest, the rest one at a time" >&2
    .venv/bin/python -m pytest -q --durations=15 tests "${OFFLINE[@]/#/--ignore=}" || { s=$?; ((status)) || status=$s; }
fi

exit "$status"
