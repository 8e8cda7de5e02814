"""What a patch file is: its tables and keys, the validated `Patch` and its `PatchControls`, the error that
lists every problem, and where patch files are found. patch.py documents the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .mappings import CCMapping, NoteMapping

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "patches"

MAX_PATCH_BYTES = 1 << 20  # a patch is a page of text; anything bigger is the wrong file

TABLES: dict[str, frozenset[str]] = {
    "": frozenset({"name", "description", "model", "prompts", "sampler", "play", "midi", "osc"}),
    "sampler": frozenset({"sampler", "steps", "cfg", "cfg_pp", "tempo_guidance"}),
    "play": frozenset({"gain", "bpm", "seed", "eject_frames"}),
    "midi": frozenset({"cc", "notes", "programs"}),
    "osc": frozenset({"aliases"}),
}


class PatchError(ValueError):
    """A patch that cannot be used; `problems` lists each one ("line 4: [sampler].steps: ...")."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, list(problems)
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        super().__init__(f"{source}: {shown}")


@dataclass(frozen=True)
class PatchControls:
    """What a patch asks of the control surfaces: the MIDI server installs cc/notes/programs, the OSC server
    the aliases. Programs map to patch files already resolved (program -> path)."""

    cc: tuple[CCMapping, ...] = ()
    notes: tuple[NoteMapping, ...] = ()
    programs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    osc_aliases: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Patch:
    """A validated patch. None (or empty prompts) means "leave the instrument's value as it is"."""

    name: str
    description: str = ""
    model: str | None = None
    prompts: tuple[tuple[str, float], ...] = ()
    sampler: str | None = None
    steps: int | None = None
    cfg: float | None = None
    cfg_pp: float | str | None = None  # a CFG++ lambda, or "off"
    tempo_guidance: float | None = None
    gain: float | None = None
    bpm: float | None = None
    seed: int | None = None
    eject_frames: int | None = None
    controls: PatchControls = field(default_factory=PatchControls)
    source: Path | None = field(default=None, compare=False)
    digest: str = field(default="", compare=False)  # sha256 of the file's bytes (the watcher's baseline)


# --- finding patch files ---------------------------------------------------------------------------------


def patch_dirs() -> list[Path]:
    """Where a patch name is looked up: ./patches first (the performer's own), then the shipped ones."""
    dirs = [Path.cwd() / "patches", SHIPPED_DIR]
    return [
        d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in {x.resolve() for x in dirs[:i]}
    ]


def available_patches() -> list[str]:
    return sorted({p.stem for d in patch_dirs() for p in d.glob("*.toml")})


def find_patch(ref: str | Path, base_dir: Path | None = None) -> Path:
    """A patch file from a path or a name ("acid" -> patches/acid.toml); ValueError naming what exists."""
    if not isinstance(ref, str | Path) or not str(ref).strip():
        raise ValueError(f"a patch is a file path or a patch name, got {ref!r}")
    path = Path(ref).expanduser()
    is_name = len(path.parts) == 1 and not path.is_file()
    if is_name:  # "acid" or "acid.toml": beside the referring patch, then ./patches, then the shipped ones
        dirs = ([base_dir] if base_dir is not None else []) + patch_dirs()
        file = path.name if path.suffix == ".toml" else f"{path.name}.toml"
        candidates = [d / file for d in dirs]
    else:
        candidates = [base_dir / path] if base_dir is not None and not path.is_absolute() else []
        candidates.append(path)
    for c in candidates:
        if c.is_file():
            return c
    if not is_name:
        raise ValueError(f"patch file not found: {ref}")
    names = available_patches()
    raise ValueError(f"no patch named {str(ref)!r} (available: {', '.join(names) or 'none'})")
