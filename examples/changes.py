# ruff: noqa: F821  (at() is provided by the renderer that runs this script)
# A change script for an offline render:
#     lmdm-live render --script examples/changes.py --seconds 48 --out out/changes.wav
# Each at(when, ...) changes what follows from that moment on; `when` is a block index or "12.5s", and every
# change builds on the one before. Keys: prompt, prompts={text: weight}, cfg, cfg_pp, steps, sampler,
# eject_frames. It is plain Python, so tempo arithmetic and loops are fine.

BPM = 122


def bar(n: float) -> str:
    """The time at the start of bar n (from 0) at BPM, in at()'s "seconds" form."""
    return f"{n * 4 * 60 / BPM:.3f}s"


DUB = "dub techno, deep filtered chord stabs with tape delay echoes, muffled kick, vinyl hiss, 122 BPM"
CHOIR = "shimmering choir, long reverb tail"
ACID = "acid house, squelchy TB-303 bassline with resonant filter sweeps, 909 drums, four on the floor"

at(0, prompt=DUB, steps=8, cfg=1.0)

# bars 4-8: a choir rises under the stabs
for i, w in enumerate((0.1, 0.2, 0.3, 0.4)):
    at(bar(4 + i), prompts={DUB: 1.0, CHOIR: w})

# bars 8-12: a guidance sweep, then CFG++ for the last of it
for i, scale in enumerate((1.5, 2.5, 3.5)):
    at(bar(8 + i), cfg=scale)
at(bar(11), cfg_pp=0.8)

# bar 12: cut to acid; drop most of the old context so the new piece is not held back by the old
at(bar(12), prompt=ACID, cfg=1.0, cfg_pp=None, eject_frames=32)

# bar 20: the choir returns over the acid, then the euler sampler for a smoother outro
at(bar(20), prompts={ACID: 1.0, CHOIR: 0.5})
at(bar(22), sampler="euler", steps=12)
