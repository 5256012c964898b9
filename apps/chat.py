"""`rxt-edge chat`: the terminal chat app, and its non-interactive mode for scripts.

Built only on the public `rxt_edge` API (no torch), so it doubles as a reference for embedding a conversation
in a program (docs/embedding.md has the short version).

Modes (`run` picks one):
- interactive, when stdin is a terminal: streamed answers, a stats line per turn, slash commands, and line
  editing with history through Python's `readline` module (stdlib; absent on Windows, where plain `input()`
  is used instead);
- scripted: `--message` (repeatable) or one message per line of piped stdin; answers one per line, or one
  JSON object per turn with `--json`. Every line is a message to the model, a line starting with "/" too
  (a script's data is never taken for a command); such a line gets a note on stderr. `--resume` and
  `--save` keep the memory between scripted runs.

Ctrl-C while an answer streams stops it; the runtime drops that turn (the memory stays as it was before it).
Ctrl-C again (at the prompt, or before the answer has stopped) or Ctrl-D quits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rxt_edge import (
    EmptyQueryError,
    GenerationConfig,
    ManifestError,
    MemoryUpdateError,
    PromptTooLongError,
    ProviderUnavailableError,
    RxTSession,
    SnapshotError,
    TurnStats,
)
from rxt_edge.contract import max_query_tokens

from .demo import DemoModelMissing, find_demo_model

__all__ = ["Chat", "ChatError", "find_demo_model", "generation_config", "run"]

HISTORY_LENGTH = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls, except tab and newline
TURN_ERRORS = (PromptTooLongError, EmptyQueryError, MemoryUpdateError)  # reported; the chat goes on


class ChatError(Exception):
    """A problem the user can fix (missing model, bad option, unreadable snapshot); printed without a trace."""


# ----------------------------------------------------------------------------------------- model and options


def cli_terms(message: str) -> str:
    """A runtime error message in command-line terms: option names as typed, not Python arguments."""
    message = message.replace("pass truncate=True", "use --truncate")
    for f in fields(GenerationConfig):
        option = "--" + f.name.replace("_", "-")
        message = message.replace(f"SamplingConfig.{f.name}", option)
        message = re.sub(rf"^{f.name}\b", option, message)
    return message


def generation_config(**options) -> GenerationConfig:
    """A `GenerationConfig` from command-line options; a bad value raises ChatError naming the option."""
    try:
        return GenerationConfig(**options)
    except ValueError as e:
        raise ChatError(cli_terms(str(e))) from None


def turn_config(generation: GenerationConfig, turn_index: int) -> GenerationConfig:
    """The config of one turn: a seed advances per turn, so turns don't repeat one draw."""
    if generation.seed is None:
        return generation
    return generation.replace(seed=generation.seed + turn_index)


@dataclass
class Turn:
    query: str
    answer: str
    stats: TurnStats

    @property
    def completed(self) -> bool:
        return self.stats.completed

    def to_json(self, number: int) -> dict:
        stats = {**asdict(self.stats), "tokens_per_s": self.stats.tokens_per_s}
        return {"turn": number, "query": self.query, "answer": self.answer, "stats": stats}


def check_save_path(path: Path, replace: bool = True) -> None:
    """Refuse a snapshot path that cannot be written, in words (not the atomic writer's temp-file name)."""
    if path.is_dir():
        raise ChatError(
            f"cannot save to {path}: it is a directory; name a file, e.g. {path / 'chat.rxtsnap'}"
        )
    if not path.parent.is_dir():
        raise ChatError(f"cannot save to {path}: the directory {path.parent} does not exist")
    if not replace and path.exists():
        raise ChatError(f"{path} exists; /save! {path} replaces it")


# ----------------------------------------------------------------------------------------------- the chat


@dataclass
class Chat:
    """One conversation and the record of its turns: what both the terminal and the scripted mode drive."""

    session: RxTSession
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conv = self.session.conversation()

    def ask(
        self, text: str, on_piece: Callable[[str], None] | None = None, stop: threading.Event | None = None
    ) -> Turn:
        """Stream one answer; setting the `stop` event ends it early, and then the runtime drops the turn."""
        pieces = self.conv.stream(text, config=turn_config(self.generation, len(self.turns)))
        answer: list[str] = []
        with contextlib.closing(pieces):  # closing an unfinished stream is what drops the turn
            for piece in pieces:
                answer.append(piece)
                if on_piece:
                    on_piece(piece)
                if stop is not None and stop.is_set():
                    break
        turn = Turn(text, "".join(answer), self.conv.last_stats)
        self.turns.append(turn)
        return turn

    def set_system(self, text: str) -> None:
        """Write a system prompt into the memory; /reset writes it again."""
        self.conv.set_system_prompt(text, truncate=self.generation.truncate)
        self.system = text

    def reset(self) -> None:
        self.conv.reset()
        if self.system:
            self.conv.set_system_prompt(self.system, truncate=self.generation.truncate)

    @property
    def max_query_tokens(self) -> int:
        """The longest message one turn takes (longer ones need --truncate)."""
        return max_query_tokens(self.session.dims.max_seq_len)

    def save(self, path: Path, replace: bool = True) -> None:
        """Snapshot the memory to `path`; with `replace=False` an existing file is an error, not overwritten."""
        check_save_path(path, replace)
        self.conv.save(path, metadata={"app": "rxt-edge chat"})

    def load(self, path: Path) -> None:
        self.conv = self.session.restore(path)


# ------------------------------------------------------------------------------------------ scripted mode


def one_line(text: str) -> str:
    """An answer on one line, safe to print: CR and LF become spaces, other control characters U+FFFD.

    Character by character, so streaming it piece by piece prints the same as converting the whole answer."""
    return _CONTROL.sub("\ufffd", text.replace("\n", " ").replace("\r", " "))


def run_script(chat: Chat, messages: Iterable[str], as_json: bool, out: TextIO, err: Console) -> int:
    """One turn per message; 0 when every turn answered, 1 when one failed (the others still run)."""
    status = 0
    for number, text in enumerate(messages, 1):
        if text.split(" ", 1)[0].lower() in COMMANDS:
            err.print(
                f"[yellow]turn {number}:[/] {escape(repr(text))} goes to the model as a message: slash commands "
                "work at a terminal only (scripts keep the memory with --resume and --save)",
                highlight=False,
            )
        try:
            turn = chat.ask(text, None if as_json else lambda p: _write(out, one_line(p)))
        except TURN_ERRORS as e:
            err.print(f"[red]turn {number}:[/] {escape(cli_terms(str(e)))}", highlight=False)
            status = 1
            if as_json:
                failed = {"turn": number, "query": text, "error": cli_terms(str(e))}
                _write(out, json.dumps(failed, ensure_ascii=False) + "\n")
            continue
        _write(out, json.dumps(turn.to_json(number), ensure_ascii=False) + "\n" if as_json else "\n")
    return status


def stdin_messages(stream: TextIO) -> Iterator[str]:
    """Non-blank lines, read as they come (so a coprocess can talk to the chat line by line)."""
    for line in stream:
        if line.strip():
            yield line.rstrip("\r\n")


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


# --------------------------------------------------------------------------------------- the terminal UI


class Terminal:
    """Everything the interactive mode prints or reads."""

    def __init__(self, console: Console):
        self.console = console
        self.readline = _load_readline()
        color = console.color_system is not None
        # readline must get the prompt itself (to redraw it); \001..\002 mark escape codes as zero-width
        self.prompt = "\001\033[1;36m\002you ›\001\033[0m\002 " if color else "you › "

    def read(self) -> str:
        if self.readline:
            return input(self.prompt)
        self.console.print("[bold cyan]you ›[/] ", end="")
        return input()

    def answer_start(self) -> None:
        self.console.print("[bold green]rxt ›[/] ", end="")

    def piece(self, text: str) -> None:
        _write(self.console.file, _CONTROL.sub("\ufffd", text))

    def answer_end(self, turn: Turn) -> None:
        _write(self.console.file, "\n")
        if turn.completed:
            self.console.print(f"      [dim]{escape(stats_line(turn.stats))}[/]", highlight=False)
        else:
            self.console.print(
                f"      [yellow]stopped after {turn.stats.answer_tokens} tokens: this turn was dropped, "
                "the memory is unchanged[/]"
            )

    def info(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/]", highlight=False)

    def error(self, text: str) -> None:
        self.console.print(f"[bold red]error:[/] {escape(text)}", highlight=False)

    def close(self) -> None:
        if self.readline:
            with contextlib.suppress(OSError):
                _history_file().parent.mkdir(parents=True, exist_ok=True)
                self.readline.write_history_file(_history_file())


def _load_readline():
    """GNU readline / libedit: arrow-key editing and history for `input()`; None where unavailable."""
    try:
        import readline
    except ImportError:
        return None
    with contextlib.suppress(OSError):
        readline.read_history_file(_history_file())
    readline.set_history_length(HISTORY_LENGTH)
    return readline


def _history_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "rxt-edge" / "chat_history"


def stats_line(s: TurnStats) -> str:
    """E.g. `42 tokens · first token 38 ms · 61.2 tok/s · memory ready`."""
    memory = "memory ready"
    if s.update_was_running:
        memory = f"memory update still running (waited {_ms(s.update_wait_s)})"
    return (
        f"{s.answer_tokens} tokens · first token {_ms(s.time_to_first_token_s)} · "
        f"{s.tokens_per_s:.1f} tok/s · {memory}"
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def stats_table(chat: Chat) -> tuple[str, Table]:
    """Session totals and one row per turn (stopped turns included)."""
    done = [t.stats for t in chat.turns if t.completed]
    decode_s = sum(s.total_s - s.time_to_first_token_s for s in done)
    decoded = sum(max(s.answer_tokens - 1, 0) for s in done)
    totals = (
        f"{len(done)} turns answered, {len(chat.turns) - len(done)} stopped · "
        f"{sum(s.answer_tokens for s in done)} answer tokens · "
        f"mean first token {_ms(sum(s.time_to_first_token_s for s in done) / max(len(done), 1))} · "
        f"{decoded / decode_s if decode_s > 0 else 0.0:.1f} tok/s · "
        f"last memory update {_ms(chat.conv.last_update_s)}"
    )
    table = Table(box=None, header_style="bold")
    for name in ("#", "query", "prompt", "answer", "first token", "tok/s", "total", "memory", "status"):
        table.add_column(name, justify="left" if name in ("query", "memory", "status") else "right")
    for i, t in enumerate(chat.turns, 1):
        s = t.stats
        query = t.query if len(t.query) <= 24 else t.query[:23] + "…"
        memory = f"was updating ({_ms(s.update_wait_s)})" if s.update_was_running else "ready"
        table.add_row(
            str(i),
            escape(_CONTROL.sub("\ufffd", query)),
            str(s.prompt_tokens),
            str(s.answer_tokens),
            _ms(s.time_to_first_token_s),
            f"{s.tokens_per_s:.1f}",
            _ms(s.total_s),
            memory,
            "answered" if t.completed else "[yellow]stopped[/]",
        )
    return totals, table


# ------------------------------------------------------------------------------------------ slash commands

HELP = [
    ("/help", "this list"),
    ("/reset", "start over from a fresh memory (the system prompt, if set, is written again)"),
    ("/save FILE", "save the conversation's memory (STM) to a new snapshot file"),
    ("/save! FILE", "the same, replacing FILE if it exists"),
    ("/load FILE", "continue a conversation saved with /save (same model only)"),
    ("/system TEXT", "write a system prompt into the memory (no TEXT: show the current one)"),
    ("/stats", "session totals and a per-turn latency table"),
    ("/quit", "leave (also Ctrl-D)"),
    ("Ctrl-C", "stop the current answer (the turn is dropped); press it again to quit"),
    ("↑ / ↓", "previous messages (history)"),
]


class Quit(Exception):
    """Raised by /quit."""


def _help(chat: Chat, ui: Terminal, arg: str) -> None:
    table = Table(box=None, show_header=False)
    for key, what in HELP if ui.readline else HELP[:-1]:  # the last line is readline's history
        table.add_row(f"[bold]{escape(key)}[/]", what)
    ui.console.print(table)


def _reset(chat: Chat, ui: Terminal, arg: str) -> None:
    chat.reset()
    ui.info("memory reset: a fresh conversation" + (" (system prompt written again)" if chat.system else ""))


def _save(chat: Chat, ui: Terminal, arg: str, replace: bool = False) -> None:
    path = _path_arg(arg, "/save! FILE" if replace else "/save FILE")
    chat.save(path, replace=replace)
    ui.info(f"saved the memory to {path}")


def _save_replacing(chat: Chat, ui: Terminal, arg: str) -> None:
    _save(chat, ui, arg, replace=True)


def _load(chat: Chat, ui: Terminal, arg: str) -> None:
    path = _path_arg(arg, "/load FILE")
    chat.load(path)
    ui.info(f"restored the memory from {path} ({chat.conv.turns} turns)")


def _system(chat: Chat, ui: Terminal, arg: str) -> None:
    if not arg:
        ui.info(
            f"system prompt: {chat.system!r}" if chat.system else "no system prompt (usage: /system TEXT)"
        )
        return
    chat.set_system(arg)
    ui.info("system prompt written into the memory")


def _stats(chat: Chat, ui: Terminal, arg: str) -> None:
    totals, table = stats_table(chat)
    ui.console.print(totals, highlight=False)
    if chat.turns:
        ui.console.print(table)


def _quit(chat: Chat, ui: Terminal, arg: str) -> None:
    raise Quit


COMMANDS: dict[str, Callable[[Chat, Terminal, str], None]] = {
    "/help": _help,
    "/reset": _reset,
    "/save": _save,
    "/save!": _save_replacing,
    "/load": _load,
    "/system": _system,
    "/stats": _stats,
    "/quit": _quit,
    "/exit": _quit,
}


def _path_arg(arg: str, usage: str) -> Path:
    if not arg:
        raise ChatError(f"usage: {usage}")
    return Path(arg).expanduser()


def run_command(chat: Chat, ui: Terminal, line: str) -> None:
    """Run one slash command; its errors are printed, and the chat goes on (Quit propagates)."""
    name, _, arg = line.partition(" ")
    command = COMMANDS.get(name.lower())
    if command is None:
        ui.error(f"unknown command {name}; /help lists the commands")
        return
    try:
        command(chat, ui, arg.strip())
    except (ChatError, SnapshotError, MemoryUpdateError, OSError, ValueError) as e:
        ui.error(str(e))


# ------------------------------------------------------------------------------------------ interactive mode


@contextlib.contextmanager
def ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """While an answer streams, Ctrl-C sets `stop` (the answer ends); a second Ctrl-C before that quits."""

    def on_sigint(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def answer(chat: Chat, ui: Terminal, text: str) -> bool:
    """One streamed turn with its stats line; True when Ctrl-C stopped it.

    The "rxt ›" label comes with the first piece: a turn refused before it starts (too long, empty) shows
    only its error."""
    stop = threading.Event()
    labelled = False

    def piece(text: str) -> None:
        nonlocal labelled
        if not labelled:
            ui.answer_start()
            labelled = True
        ui.piece(text)

    try:
        with ctrl_c_stops(stop):
            turn = chat.ask(text, piece, stop)
    except KeyboardInterrupt:  # the second Ctrl-C, before the answer had stopped
        raise Quit from None
    except TURN_ERRORS as e:
        if labelled:
            _write(ui.console.file, "\n")
        ui.error(cli_terms(str(e)))
        return False
    if not labelled:  # an empty answer
        ui.answer_start()
    ui.answer_end(turn)
    return not turn.completed


def run_interactive(chat: Chat, ui: Terminal, banner: str) -> int:
    """The read-answer loop. A Ctrl-C arms quitting (the next one quits); an entered line disarms it."""
    ui.console.print(banner, highlight=False)
    ui.info("/help for commands · Ctrl-C stops an answer · Ctrl-D quits")
    armed = False
    while True:
        try:
            line = ui.read().strip()
            if line.startswith("/"):
                armed = False
                run_command(chat, ui, line)
            elif line:
                armed = answer(chat, ui, line)
        except KeyboardInterrupt:  # at the prompt, or during a slash command
            if armed:
                break
            armed = True
            _write(ui.console.file, "\n")
            ui.info("(press Ctrl-C again or Ctrl-D to quit)")
        except (EOFError, Quit):
            break
    _write(ui.console.file, "\n")
    ui.info("bye")
    return 0


# ------------------------------------------------------------------------------------------------- entry


def open_chat(
    model_dir: Path | None,
    provider: str = "cpu",
    threads: int | None = None,
    generation: GenerationConfig | None = None,
    system: str | None = None,
    resume: Path | None = None,
) -> Chat:
    """Load the package (the demo by default), then resume a snapshot and/or write a system prompt."""
    generation = generation or GenerationConfig()
    try:
        model_dir = find_demo_model() if model_dir is None else model_dir
        chat = Chat(RxTSession.load(model_dir, provider=provider, threads=threads), generation)
        if resume is not None:
            chat.load(resume)
        if system:
            chat.set_system(system)
    except (ManifestError, ProviderUnavailableError, SnapshotError, MemoryUpdateError, ValueError) as e:
        raise ChatError(cli_terms(str(e))) from None
    except DemoModelMissing as e:
        raise ChatError(str(e)) from None
    return chat


def banner(chat: Chat) -> str:
    pkg, d = chat.session.package, chat.session.dims
    name = pkg.directory.parent.name if pkg.directory.name == "package" else pkg.directory.name
    resumed = f" · resumed at turn {chat.conv.turns}" if chat.conv.turns else ""
    return (
        f"[bold]rxt-edge chat[/] · {escape(name)} ({pkg.manifest.precision}, {d.memory_layers} memory layers, "
        f"{d.stm_slots} memory slots x {d.dim}) on {chat.session.provider}{resumed}\n"
        f"[dim]messages up to {chat.max_query_tokens} tokens (longer: --truncate keeps the end) · "
        f"answers up to {chat.generation.max_new_tokens} tokens[/]"
    )


def run(
    model_dir: Path | None = None,
    provider: str = "cpu",
    threads: int | None = None,
    generation: GenerationConfig | None = None,
    system: str | None = None,
    resume: Path | None = None,
    messages: list[str] | None = None,
    as_json: bool = False,
    save: Path | None = None,
) -> int:
    """The `rxt-edge chat` command: interactive on a terminal, scripted with messages, --json or a pipe.

    `save`: where the memory goes when the chat ends (replaced if it exists, so a script can `--resume`
    and `--save` one file); checked before the model loads."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # a non-UTF-8 terminal must not crash on model output
    err = Console(stderr=True, soft_wrap=True)
    interactive = not messages and not as_json and sys.stdin.isatty()
    try:
        if save is not None:
            check_save_path(save)
        with err.status("loading the model") if interactive else contextlib.nullcontext():
            chat = open_chat(model_dir, provider, threads, generation, system, resume)
    except ChatError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        return 2
    try:
        if not interactive:
            status = run_script(chat, messages or stdin_messages(sys.stdin), as_json, sys.stdout, err)
        else:
            ui = Terminal(Console(highlight=False))
            try:
                status = run_interactive(chat, ui, banner(chat))
            finally:
                ui.close()
        if save is not None:
            try:
                chat.save(save)
            except (ChatError, SnapshotError, MemoryUpdateError, OSError) as e:
                err.print(f"[bold red]error:[/] the memory was not saved: {escape(str(e))}", highlight=False)
                return 2
            if interactive:
                err.print(f"[dim]saved the memory to {escape(str(save))}[/]", highlight=False)
        return status
    finally:
        chat.session.close()
