import os

import pytest

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
