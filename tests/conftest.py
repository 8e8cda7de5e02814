import os
import sys
from pathlib import Path

import pytest

# the harnesses the tests share (tests/support) import by their plain names, wherever the test sits
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

DEFAULT_SERVER = "lmdm-test"


@pytest.fixture(scope="session")
def jack_server():
    """The name of a running JACK server to test against (the private one scripts/test.sh starts).

    A missing server is a failure, not a skip: tests that ask for it must really talk to JACK."""
    name = os.environ.get("JACK_DEFAULT_SERVER", DEFAULT_SERVER)
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        import jack
    except Exception as e:  # pragma: no cover - JACK-Client is a hard dependency
        pytest.fail(
            f"cannot import the jack module (JACK-Client / libjack missing?): {e!r}. "
            "Run the tests through scripts/test.sh, which installs and starts what they need."
        )
    try:
        probe = jack.Client("lmdm-probe", no_start_server=True, servername=name)
    except jack.JackError as e:
        pytest.fail(
            f"no JACK server named {name!r} is reachable ({e}). Run the tests through "
            "`bash scripts/test.sh`, which starts a private JACK server for them."
        )
    probe.close()
    yield name


@pytest.fixture
def played(model, tmp_path):
    """The requesting module's `model` played in real time behind the OSC server (osc_harness): the
    instrument, its OSCControl and the HeardClock of its blocks."""
    from osc_harness import played_over_osc

    with played_over_osc(model, tmp_path) as rig:
        yield rig


@pytest.fixture(scope="module")
def text():
    """The MiniLM text encoder the stream conditions on (each module's own, as when they each made one)."""
    from lmdm_live.model.conditioners import MiniLMTextEncoder

    return MiniLMTextEncoder()
