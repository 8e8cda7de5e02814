"""The live-coding REPL: a Python namespace with `inst` in it, on the same asyncio loop as OSC and MIDI.

prompt_toolkit draws the prompt and a bottom toolbar of live figures; `patch_stdout` keeps prints from other
tasks above the prompt. Every error is one line; the full traceback of the last one is in `_tb`.
"""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

if TYPE_CHECKING:
    from ..live.instrument import Instrument

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class NamespaceCompleter(Completer):
    """Names of the namespace, and public attributes after a dot (`inst.pro` -> prompt, prompts)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def get_completions(self, document: Document, complete_event) -> Iterable[Completion]:
        word = document.get_word_before_cursor(pattern=_DOTTED)
        if not word:
            return
        head, dot, tail = word.rpartition(".")
        if dot:
            try:
                obj = eval(head, {"__builtins__": {}}, self.namespace)  # names and attributes only
            except Exception:
                return
            names = [n for n in dir(obj) if not n.startswith("_")]
        else:
            import builtins

            names = list(self.namespace) + [n for n in dir(builtins) if not n.startswith("_")]
        for name in sorted(set(names)):
            if name.startswith(tail):
                yield Completion(name, start_position=-len(tail))


def render(value: Any) -> str:
    """repr, except status reports, which read better as a two-column table (rich, one-shot)."""
    from ..live.schedule import StatusReport

    if not isinstance(value, StatusReport):
        return repr(value)
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in value.items():
        table.add_row(k, "-" if v is None else str(v))
    buf = StringIO()
    Console(file=buf, width=100, color_system=None).print(table)
    return buf.getvalue().rstrip()


def run_source(source: str, namespace: dict[str, Any], write: Callable[[str], None] = print) -> bool:
    """Run one input like the Python REPL (expression values are echoed). False when it raised."""
    if not source.strip():
        return True
    try:
        try:
            code = compile(source, "<lmdm>", "eval")
        except SyntaxError:
            code = compile(source, "<lmdm>", "exec")
            exec(code, namespace)
            return True
        value = eval(code, namespace)
        if value is not None:
            namespace["_"] = value
            write(render(value))
        return True
    except Exception as e:
        namespace["_tb"] = traceback.format_exc()
        msg = str(e).splitlines()[0] if str(e) else ""
        write(f"{type(e).__name__}: {msg}" if msg else type(e).__name__)
        return False


def toolbar_text(inst: Instrument) -> str:
    """One line of live figures for the bottom toolbar."""
    try:
        s = inst.engine.status()
        p = inst._params
        prompt = p.dominant if len(p.prompts) == 1 else " + ".join(t for t, _ in p.prompts)
        guide = f"cfg++ {p.sampler.cfg_pp}" if p.sampler.cfg_pp is not None else f"cfg {p.sampler.cfg:g}"
        lat = s["latency_ms_last"]
        cut = s.get("limiter_db_last") or 0.0  # shown only while the limiter works
        return (
            f" {prompt[:40]!r} | {guide} | steps {p.sampler.steps} | x{s['x_realtime'] or 0:.1f} real time"
            f" | ring {s['ring_ms']:.0f} ms | underruns {s['underruns']} | faults {s['faults']}"
            f" | latency {'-' if lat is None else f'{lat:.0f} ms'}"
            + (f" | limiter -{cut:.1f} dB" if cut >= 0.1 else "")
        )
    except Exception as e:  # the toolbar must never take the REPL down
        return f" status unavailable: {type(e).__name__}"


async def run_repl(
    namespace: dict[str, Any],
    toolbar: Callable[[], str] | None = None,
    history_path: str | Path | None = None,
    input=None,
    output=None,
    banner: str | None = None,
) -> None:
    """Read-eval-print until EOF (Ctrl-D) or `quit()`; Ctrl-C clears the line."""
    history = FileHistory(str(history_path)) if history_path else InMemoryHistory()
    session: PromptSession = PromptSession(
        history=history,
        completer=NamespaceCompleter(namespace),
        complete_while_typing=False,
        bottom_toolbar=toolbar,
        refresh_interval=0.25 if toolbar else 0,
        input=input,
        output=output,
    )
    done = asyncio.Event()
    namespace.setdefault("quit", done.set)
    namespace.setdefault("exit", done.set)
    with patch_stdout(raw=True):
        if banner:
            print(banner)
        while not done.is_set():
            try:
                text = await session.prompt_async("lmdm> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            run_source(text, namespace)
