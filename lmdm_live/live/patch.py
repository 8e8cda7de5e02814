"""Patches: a sound and its controls in one TOML file, checked whole before anything changes.

A patch is what a performer loads between pieces: prompts, sampler settings, gain and tempo, plus the MIDI
and OSC mappings that make a controller play it. Loading validates the whole file first (every problem is
reported in one line naming the file and the line or key), so a typo never half-applies a patch on stage.

Schema (every table and key is optional, except that [prompts] must not be empty when present):

    name = "acid"                         # default: the file's stem
    description = "squelchy 303 lines"
    model = "small"                       # a preset name or a checkpoint path (relative to the patch file);
                                          # a patch for another model than the one playing is refused
    [prompts]                             # text = weight (>= 0, not all 0); the blend replaces the current one
    "acid house, 303 bassline, 126 bpm" = 1.0
    "warehouse reverb" = 0.3
    [sampler]
    sampler = "pingpong"                  # or "euler"
    steps = 8                             # 1..100
    cfg = 1.0                             # 0..20 (1 = no guidance); setting it turns CFG++ off
    cfg_pp = 0.95                         # 0..2, or "off"
    tempo_guidance = 20                   # 0..50: holds the music to bpm (0 = off)
    [play]
    gain = 0.9                            # 0..4
    bpm = 126                             # 20..400: the beat/bar grid changes quantise to
    seed = 7                              # an integer
    eject_frames = 8                      # context frames dropped when the main prompt changes (>= 0)
    [[midi.cc]]                           # a knob: cc 0..127 sweeps param from lo to hi
    cc = 74
    param = "cfg"                         # cfg, cfg_pp, tempo_guidance, steps, gain, seed, bpm, drop, "weight:<prompt>"
    lo = 1.0
    hi = 6.0
    curve = "exp"                         # lin | exp | log
    channel = 0                           # 0..15; leave out for any channel
    [[midi.notes]]                        # a key: note-on adds the prompt to the blend, note-off removes it
    note = 36
    prompt = "kick drum"
    weight = 1.0
    [midi.programs]                       # program change -> patch name (beside this file, or shipped)
    1 = "acid"
    2 = "ambient"
    [osc.aliases]                         # an OSC address whose one number sets a param
    "/knob/1" = "cfg"

`load_patch(path)` -> `Patch`; `apply_patch(inst, patch, at="bar")` sets it through the Instrument's own
setters and returns the `PatchControls` (MIDI mappings, OSC aliases) for the control surfaces to install;
`PatchWatcher` reloads a file when it is saved.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from .files import Refused, read_small
from .params import check_at
from .patch_format import (
    MAX_PATCH_BYTES,
    SHIPPED_DIR,
    Patch,
    PatchControls,
    PatchError,
    available_patches,
    find_patch,
    patch_dirs,
)
from .patch_parse import parse_patch

__all__ = [
    "MAX_PATCH_BYTES",
    "SHIPPED_DIR",
    "Patch",
    "PatchControls",
    "PatchError",
    "apply_patch",
    "available_patches",
    "find_patch",
    "load_named_patch",
    "load_patch",
    "parse_patch",
    "patch_dirs",
]

# --- loading ---------------------------------------------------------------------------------------------


def load_patch(ref: str | Path) -> Patch:
    """Read and validate a whole patch file (a path or a name under patches/); PatchError if anything is off.
    Its size is checked before it is read."""
    path = find_patch(ref)
    try:
        data = read_small(path, MAX_PATCH_BYTES, "a patch")
    except (Refused, OSError) as e:
        why = str(e) if isinstance(e, Refused) else f"cannot read the file ({e.strerror or e})"
        raise PatchError(path.name, [why]) from None
    return parse_patch(data, path)


PATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def load_named_patch(name: str, dirs: list[Path] | None = None) -> Patch:
    """The patch called `name` ("acid" or "acid.toml") in `dirs` (default: `patch_dirs()`), for a remote
    client: a plain name, never a path; a regular file in the directory itself (no symbolic link), its size
    checked before it is read. Errors name the patch, never anything outside those directories."""
    if not isinstance(name, str) or not PATCH_NAME.fullmatch(name):
        raise ValueError(
            "a patch is asked for by name (letters, digits, '-', '_', '.'; no folders): "
            f"{name[:60]!r} is not one"
            if isinstance(name, str)
            else f"a patch name is a string, got {name!r}"
        )
    file = name if name.endswith(".toml") else f"{name}.toml"
    dirs = patch_dirs() if dirs is None else [Path(d) for d in dirs]
    for d in dirs:
        try:
            dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            data = read_small(file, MAX_PATCH_BYTES, "a patch", follow=False, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except (Refused, OSError) as e:
            raise PatchError(file, [str(e) if isinstance(e, Refused) else "cannot be read"]) from None
        finally:
            os.close(dir_fd)
        return parse_patch(data, d / file)
    names = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    raise ValueError(f"no patch named {name!r} (available: {', '.join(names) or 'none'})")


# --- applying --------------------------------------------------------------------------------------------


def _model_mismatch(inst, want: str) -> str | None:
    """Why the instrument's model is not the patch's, or None when it is."""
    from ..model.bundle import PRESETS

    playing = inst.model.name
    ref = str(getattr(inst.engine, "model_ref", "") or "")
    if want in PRESETS:
        same = playing == want and not Path(ref).is_file()
    else:
        same = Path(ref).is_file() and Path(ref).resolve() == Path(want).resolve()
        if not same:
            from ..model.checkpoint import load_checkpoint_config

            try:
                same = load_checkpoint_config(want).get("name", Path(want).stem) == playing
            except (ValueError, OSError):
                same = False
    if same:
        return None
    return (
        f"the patch is for model {Path(want).name!r} but the instrument plays {playing!r}; swapping models "
        f"live is not supported yet (restart with --model {want})"
    )


def _current(inst) -> dict[str, Any]:
    return {
        "prompts": inst.prompts(),
        "sampler": inst.sampler(),
        "steps": inst.steps(),
        "cfg": inst.cfg(),
        "cfg_pp": inst.cfg_pp(),
        "tempo_guidance": inst.tempo_guidance(),
        "seed": inst.seed(),
        "gain": inst.gain(),
        "bpm": inst.bpm(),
        "eject_frames": inst._params.eject_frames,
    }


def _set_eject(inst, frames: int | None, at: Any) -> None:
    setter = getattr(inst, "eject_frames", None)
    if callable(setter):
        setter(frames, at)
    else:  # no public setter yet: the same snapshot path the other setters use
        inst._set(replace(inst._params, eject_frames=frames), at)


def _set_all(inst, values: dict[str, Any], at: Any) -> None:
    """Through the Instrument's setters, in an order where none undoes another (cfg turns CFG++ off, so it
    goes first; bpm last, so the change lands on the grid the performer hears now)."""
    if "eject_frames" in values:
        _set_eject(inst, values["eject_frames"], at)
    if values.get("prompts"):
        inst.prompts(dict(values["prompts"]), at)
    for key in ("sampler", "steps", "cfg", "tempo_guidance"):
        if values.get(key) is not None:
            getattr(inst, key)(values[key], at)
    if "cfg_pp" in values:
        inst.cfg_pp("off" if values["cfg_pp"] is None else values["cfg_pp"], at)
    for key in ("seed", "gain"):
        if values.get(key) is not None:
            getattr(inst, key)(values[key], at)
    if values.get("bpm") is not None:
        inst.bpm(values["bpm"])


def apply_patch(inst, patch: Patch, at: Any = "bar") -> PatchControls:
    """Set `patch` on a playing Instrument, all of it heard from the same block (`at`), or none of it.

    Returns the patch's MIDI mappings and OSC aliases for the control surfaces to install.
    """

    source = patch.source.name if patch.source is not None else patch.name
    try:
        at = check_at(at)
    except ValueError as e:
        raise PatchError(source, [str(e)]) from None
    if patch.model is not None:
        why = _model_mismatch(inst, patch.model)
        if why:
            raise PatchError(source, [f"model: {why}"])
    values: dict[str, Any] = {"prompts": patch.prompts}
    for key in ("sampler", "steps", "cfg", "tempo_guidance", "seed", "gain", "bpm"):
        values[key] = getattr(patch, key)
    if patch.cfg_pp is not None:
        values["cfg_pp"] = None if patch.cfg_pp == "off" else patch.cfg_pp
    if patch.eject_frames is not None:
        values["eject_frames"] = patch.eject_frames
    before = _current(inst)
    try:
        _set_all(inst, values, at)
    except Exception:
        # every value was checked when the patch loaded, so this is a bug; put back what was there
        _set_all(inst, before, at)
        raise
    return patch.controls
