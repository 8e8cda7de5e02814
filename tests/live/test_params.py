"""The parameter table is the one vocabulary: the docs, OSC, MIDI, patches and the Instrument read it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmdm_live.control.osc_routes import ROUTES
from lmdm_live.live.mappings import CCMapping
from lmdm_live.live.params import PARAM_DOMAINS, PARAMS, apply_param, check_at, doc_table, param_kind

ROOT = Path(__file__).resolve().parents[2]
OSC_DOC = ROOT / "docs" / "osc.md"


def documented_parameters() -> list[str]:
    text = OSC_DOC.read_text()
    table = text.split("<!-- parameters: generated")[1].split("<!-- end of parameters -->")[0]
    return re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)


def test_the_osc_doc_lists_exactly_the_declared_parameters():
    names = [n.replace(":<prompt>", "") for n in documented_parameters()]
    assert names == list(PARAMS)


def test_the_committed_parameter_table_is_the_generated_one():
    assert doc_table() in OSC_DOC.read_text()
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "osc_params_doc.py"), "--check"])
    assert check.returncode == 0, "run `python scripts/osc_params_doc.py` after changing live/params.py"


def test_osc_usage_and_mapping_domains_come_from_the_table():
    assert ROUTES["/lmdm/cfg"].usage == "f:scale 0..20"
    assert ROUTES["/lmdm/steps"].usage == "i:steps 1..100"
    assert ROUTES["/lmdm/bpm"].usage == f"f:bpm {PARAMS['bpm'].lo:g}..{PARAMS['bpm'].hi:g}"
    assert PARAM_DOMAINS["gain"] == (0.0, 4.0, False)
    with pytest.raises(ValueError, match="range 0..4"):
        CCMapping.from_dict({"cc": 1, "param": "gain", "lo": 0, "hi": 5})


def test_names_and_at_are_checked_once():
    assert param_kind("weight:choir") == "weight"
    with pytest.raises(ValueError, match="unknown"):
        param_kind("volume")
    assert check_at("bar") == "bar" and check_at(3) == 3.0
    for bad in ("soon", float("nan"), None):
        with pytest.raises(ValueError, match="at must be"):
            check_at(bad)


class Recorder:
    """Stands in for the Instrument: records the setter calls `apply_param` makes."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.blend = {"a": 1.0}

    def prompts(self, weights=None, at="now"):
        if weights is None:
            return dict(self.blend)
        self.calls.append(("prompts", weights, at))
        return None

    def bpm(self, value=None):
        self.calls.append(("bpm", value))

    def drop_context(self, frames=None, at="now"):
        self.calls.append(("drop", frames, at))

    def steps(self, n=None, at="now"):
        self.calls.append(("steps", n, at))


def test_apply_param_turns_a_number_into_one_setter_call():
    r = Recorder()
    apply_param(r, "steps", 6.6, "bar")
    apply_param(r, "weight:choir", 0.3)
    apply_param(r, "bpm", 124.0, "bar")  # the tempo is never quantised
    apply_param(r, "drop", 8.0)
    assert r.calls == [
        ("steps", 7, "bar"),
        ("prompts", {"a": 1.0, "choir": 0.3}, "now"),
        ("bpm", 124.0),
        ("drop", 8, "now"),
    ]
