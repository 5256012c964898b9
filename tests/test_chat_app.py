"""The chat app as a user meets it: in a pseudo-terminal (typing, streaming, slash commands, Ctrl-C, Ctrl-D)
and from scripts (--message, --json, piped stdin). Expected answers and memories come from the Python API."""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from rxt_edge.apps.chat import ChatError, generation_config, one_line
from rxt_edge.apps.demo import DemoModelMissing, find_demo_model

from rxt_edge import GenerationConfig, RxTSession
from rxt_edge.snapshot import load_snapshot

CLI = [sys.executable, "-m", "rxt_edge.apps.cli", "chat"]
LONG = 1000  # max_new_tokens for the terminal sessions: answers run long enough to interrupt
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# (the terminal wraps a long stats line, e.g. a slow memory update's: any gap between words may be a line break)
STATS = re.compile(
    r"\n +(\d+)\s+tokens\s+·\s+first\s+token\s+\d+\s+ms\s+·\s+[\d.]+\s+tok/s\s+·\s+"
    r"(memory\s+ready|memory\s+update\s+still\s+running\s+\(waited\s+\d+\s+ms\))\n"
)
PROMPT = "you › "
COLUMNS = 400  # wide enough for a message naming two tmp_path files on one line (xdist's paths are long)


# ------------------------------------------------------------------------------------------ helpers


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "TERM": "xterm-256color",
        "PYTHONIOENCODING": "utf-8",
        # the terminal's size, as Terminal sets it on the pty: under pytest-xdist the app drew 80 columns without
        # it, and wrapped lines break the patterns this test reads
        "COLUMNS": str(COLUMNS),
        "LINES": "50",
    }


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes the controlling terminal: Ctrl-C sends SIGINT
    # and the app hears it: a test run started as a background job passes SIGINT down ignored, which Python keeps
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A user at a terminal: types keys, reads the screen (escape codes stripped)."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.raw = ""
        self.screen = ""
        self.pos = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def _read(self, timeout: float) -> None:
        if not select.select([self.master], [], [], timeout)[0]:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the app has exited and closed the terminal
            data = b""
        if not data:
            raise EOFError
        self.raw += self._decoder.decode(data)
        self.screen = ANSI.sub("", self.raw).replace("\r", "")

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        """Wait for `pattern` on the screen after the previous match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not (m := rx.search(self.screen, self.pos)):
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise EOFError
                self._read(left)
            except EOFError:
                raise AssertionError(
                    f"no {pattern!r} on the screen; it ends with:\n{self.screen[-3000:]}"
                ) from None
        self.pos = m.end()
        return m

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def enter(self, line: str) -> None:
        self.type(line + "\r")

    def key_at_prompt(self, key: str) -> None:
        """A control key at the prompt, as a person would press it: a moment after the prompt is drawn."""
        time.sleep(0.3)
        self.type(key)

    def command(self, line: str, reply: str) -> re.Match:
        self.enter(line)
        m = self.expect(reply)
        self.expect(PROMPT)
        return m

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                self._read(0.1)
            except EOFError:
                break
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal([*CLI, *args], _env(tmp_path))
        opened.append(t)
        return t

    yield start
    for t in opened:
        t.close()


def _stm(path: Path, session: RxTSession) -> np.ndarray:
    return load_snapshot(path, session.package.fingerprint, session.package.stm_shape)[0]


def _answers(session: RxTSession, messages: list[str], max_new_tokens: int, conv=None) -> list[str]:
    conv = conv or session.conversation()
    return [conv.say(m, max_new_tokens=max_new_tokens) for m in messages]


def _run(*args: str, tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_env(tmp_path),
        timeout=120,
    )


@pytest.fixture(scope="module")
def session(tiny_package):
    with RxTSession.load(tiny_package) as s:
        yield s


# ------------------------------------------------------------------------------------ interactive


@pytest.mark.slow
def test_interactive_session(tiny_package, session, terminal, tmp_path):
    """A whole session: two answered turns, an interrupted one, every slash command, history, /quit."""
    first, second = "Hi, I'm Ann and I live in Paris.", "Where do I live?"
    conv = session.conversation()
    expected = [(conv.say(m, max_new_tokens=LONG), conv.last_stats.answer_tokens) for m in (first, second)]
    t = terminal(str(tiny_package), "--max-new-tokens", str(LONG))
    t.expect("rxt-edge chat")
    limit = session.dims.max_seq_len - 5  # [BOS][Q] ... [A], one answer token, [EOS]
    t.expect(rf"messages up to {limit} tokens \(longer: --truncate keeps the end\)")
    t.expect(PROMPT)

    for message, (answer, tokens) in zip([first, second], expected, strict=True):
        t.enter(message)
        t.expect(re.escape(message) + "\n")
        shown = t.expect(r"rxt › ((?s:.*?))" + STATS.pattern)
        assert shown.group(1) == CONTROL.sub("\ufffd", answer)  # the streamed text is the real answer
        assert int(shown.group(2)) == tokens
        t.expect(PROMPT)

    t.command("/help", r"/help.*\n(?:.*\n)*?.*/quit")
    for name in ("/reset", "/save FILE", "/load FILE", "/system TEXT", "/stats", "Ctrl-C"):
        assert name in t.screen[t.screen.rindex("/help") :]

    a = tmp_path / "a.rxtsnap"
    t.command(f"/save {a}", "saved the memory to")
    conv = session.conversation()
    _answers(session, [first, second], LONG, conv)
    np.testing.assert_allclose(_stm(a, session), conv.stm(), atol=1e-5)
    saved = a.read_bytes()
    t.command(f"/save {a}", r"error: .*a\.rxtsnap exists; /save! ")
    assert a.read_bytes() == saved
    a.write_bytes(b"old")
    t.command(f"/save! {a}", "saved the memory to")
    assert a.read_bytes() == saved
    nowhere = tmp_path / "no-such-dir" / "x.rxtsnap"
    t.command(f"/save {nowhere}", r"error: cannot save to .*no-such-dir does not exist")

    # Ctrl-C while the answer streams: it stops, the turn is dropped, the memory is unchanged
    t.enter("Tell me a very long story.")
    t.expect(r"rxt › [^\n]")
    t.type("\x03")
    stopped = t.expect(r"stopped after (\d+) tokens: this turn was dropped")
    assert int(stopped.group(1)) < LONG - 10
    t.expect(PROMPT)
    b = tmp_path / "b.rxtsnap"
    t.command(f"/save {b}", "saved")
    np.testing.assert_array_equal(_stm(b, session), _stm(a, session))

    totals = t.command("/stats", r"(\d+) turns answered, (\d+) stopped")
    assert totals.group(1, 2) == ("2", "1")
    rows = t.screen[totals.start() :]
    assert re.search(r"\n +1 +Hi, I'm Ann.*answered", rows) and re.search(r"\n +3 +Tell me.*stopped", rows)

    c = tmp_path / "c.rxtsnap"
    t.command("/reset", "memory reset")
    t.command(f"/save {c}", "saved")
    np.testing.assert_array_equal(_stm(c, session), session.package.initial_stm)

    system = "You are a helpful pirate."
    t.command(f"/system {system}", "system prompt written")
    t.command("/system", re.escape(f"system prompt: {system!r}"))
    d = tmp_path / "d.rxtsnap"
    t.command(f"/save {d}", "saved")
    with_system = session.conversation()
    with_system.set_system_prompt(system)
    np.testing.assert_allclose(_stm(d, session), with_system.stm(), atol=1e-5)
    assert not np.allclose(_stm(d, session), session.package.initial_stm)

    e = tmp_path / "e.rxtsnap"
    t.command("/reset", r"memory reset.*system prompt written again")
    t.command(f"/save {e}", "saved")
    np.testing.assert_allclose(_stm(e, session), _stm(d, session), atol=1e-6)

    f = tmp_path / "f.rxtsnap"
    t.command(f"/load {a}", r"restored the memory from .* \(2 turns\)")
    t.command(f"/save {f}", "saved")
    np.testing.assert_array_equal(_stm(f, session), _stm(a, session))

    t.command(f"/load {tmp_path / 'missing.rxtsnap'}", "error: .*cannot read snapshot")
    t.command("/save", r"error: usage: /save FILE")
    t.command("/frobnicate", "error: unknown command /frobnicate")

    t.command("/stats", r"2 turns answered, 1 stopped")
    t.key_at_prompt("\x1b[A\r")  # arrow up: the previous line again
    t.expect(r"2 turns answered, 1 stopped")
    t.expect(PROMPT)

    t.enter("/quit")
    t.expect("bye")
    assert t.exit_code() == 0
    history = Path(tmp_path / "home/state/rxt-edge/chat_history").read_text()
    assert "/stats" in history and first in history


@pytest.mark.slow
def test_ctrl_c_at_the_prompt_warns_and_ctrl_d_quits(tiny_package, terminal):
    t = terminal(str(tiny_package), "--max-new-tokens", "8")
    t.expect(PROMPT)
    t.key_at_prompt("\x03")
    t.expect(r"press Ctrl-C again or Ctrl-D to quit")
    t.expect(PROMPT)
    t.enter("Hello")  # an entered line disarms: the app keeps going
    t.expect(STATS.pattern)
    t.expect(PROMPT)
    t.key_at_prompt("\x03")
    t.expect("press Ctrl-C again")
    t.expect(PROMPT)
    t.key_at_prompt("\x04")
    t.expect("bye")
    assert t.exit_code() == 0


@pytest.mark.slow
def test_second_ctrl_c_after_a_stopped_answer_quits(tiny_package, terminal):
    t = terminal(str(tiny_package), "--max-new-tokens", str(LONG))
    t.expect(PROMPT)
    t.enter("Tell me everything.")
    t.expect(r"rxt › [^\n]")
    t.type("\x03")
    t.expect("this turn was dropped")
    t.expect(PROMPT)
    t.key_at_prompt("\x03")
    t.expect("bye")
    assert t.exit_code() == 0


# ------------------------------------------------------------------------------------ scripted


MESSAGES = ["Hi, I'm Ann.", "What is my name?", "Tell me a joke."]


@pytest.mark.slow
def test_messages_print_one_answer_per_line(tiny_package, session, tmp_path):
    args = [a for m in MESSAGES for a in ("--message", m)]
    out = _run(str(tiny_package), *args, "--max-new-tokens", "40", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == [one_line(a) for a in _answers(session, MESSAGES, 40)] + [""]


@pytest.mark.slow
def test_json_has_query_answer_and_stats_per_turn(tiny_package, session, tmp_path):
    args = [a for m in MESSAGES for a in ("-m", m)]
    out = _run(str(tiny_package), *args, "--json", "--max-new-tokens", "40", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    turns = [json.loads(line) for line in out.stdout.splitlines()]
    conv = session.conversation()
    for number, (turn, message) in enumerate(zip(turns, MESSAGES, strict=True), 1):
        assert turn["turn"] == number and turn["query"] == message
        assert turn["answer"] == conv.say(message, max_new_tokens=40)  # exact, line breaks included
        stats = turn["stats"]
        assert stats["completed"] is True and isinstance(stats["update_was_running"], bool)
        assert stats["answer_tokens"] == conv.last_stats.answer_tokens
        assert stats["prompt_tokens"] == conv.last_stats.prompt_tokens
        assert 0 < stats["time_to_first_token_s"] <= stats["total_s"] and stats["tokens_per_s"] >= 0


@pytest.mark.slow
def test_piped_stdin_one_message_per_line(tiny_package, session, tmp_path):
    piped = _run(
        str(tiny_package), "--max-new-tokens", "30", tmp_path=tmp_path, stdin="\n".join(MESSAGES) + "\n\n  \n"
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.split("\n") == [one_line(a) for a in _answers(session, MESSAGES, 30)] + [""]


@pytest.mark.slow
def test_stdin_is_answered_line_by_line(tiny_package, session, tmp_path):
    """A coprocess gets each answer before it sends the next message."""
    expected = [one_line(a) for a in _answers(session, MESSAGES[:2], 30)]
    proc = subprocess.Popen(
        [*CLI, str(tiny_package), "--max-new-tokens", "30"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=_env(tmp_path),
    )
    try:
        for message, answer in zip(MESSAGES[:2], expected, strict=True):
            proc.stdin.write(message + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == answer + "\n"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


@pytest.mark.slow
def test_resume_and_system_prompt(tiny_package, session, tmp_path):
    conv = session.conversation()
    conv.say(MESSAGES[0], max_new_tokens=30)
    snap = tmp_path / "ann.rxtsnap"
    conv.save(snap)
    out = _run(str(tiny_package), "--resume", str(snap), "--json", "-m", MESSAGES[1], tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    default = GenerationConfig().max_new_tokens  # the app's default length is the API's
    resumed = conv.say(MESSAGES[1], max_new_tokens=default)
    assert json.loads(out.stdout)["answer"] == resumed
    assert resumed != session.conversation().say(MESSAGES[1], max_new_tokens=default)  # the memory matters

    system = "Answer briefly."
    conv = session.conversation()
    conv.set_system_prompt(system)
    out = _run(str(tiny_package), "--system", system, "--json", "-m", MESSAGES[0], tmp_path=tmp_path)
    instructed = conv.say(MESSAGES[0], max_new_tokens=default)
    assert json.loads(out.stdout)["answer"] == instructed
    assert instructed != session.conversation().say(MESSAGES[0], max_new_tokens=default)


@pytest.mark.slow
def test_errors_are_named_and_later_turns_still_run(tiny_package, tmp_path):
    missing = tmp_path / "no-such-package"
    out = _run(str(missing), "-m", "hi", tmp_path=tmp_path)
    assert out.returncode == 2 and str(missing) in out.stderr and "Traceback" not in out.stderr

    out = _run(str(tiny_package), "--resume", str(tmp_path / "x.rxtsnap"), "-m", "hi", tmp_path=tmp_path)
    assert out.returncode == 2 and "cannot read snapshot" in out.stderr

    out = _run(str(tiny_package), "--top-p", "0", "-m", "hi", tmp_path=tmp_path)
    assert out.returncode == 2 and "--top-p" in out.stderr

    too_long = "Paris " * 1200
    out = _run(
        str(tiny_package), "--json", "-m", too_long, "-m", "hi", "--max-new-tokens", "5", tmp_path=tmp_path
    )
    assert out.returncode == 1 and "turn 1" in out.stderr
    failed, answered = (json.loads(line) for line in out.stdout.splitlines())
    assert "tokens" in failed["error"] and "answer" not in failed
    assert answered["turn"] == 2 and answered["stats"]["completed"]

    out = _run(str(tiny_package), "-m", " ", "-m", "hi", "--max-new-tokens", "5", tmp_path=tmp_path)
    assert out.returncode == 1 and "turn 1" in out.stderr and len(out.stdout.split("\n")) == 2


@pytest.mark.slow
def test_chat_command_never_imports_torch(tiny_package, tmp_path):
    code = (
        "import sys\n"
        "from rxt_edge.apps.cli import app\n"
        "try:\n"
        f"    app(['chat', {str(tiny_package)!r}, '-m', 'hi', '--max-new-tokens', '3'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('rxt_edge.export'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


@pytest.mark.slow
def test_embed_example_remembers_each_user_across_restarts(tiny_package, session, tmp_path):
    example = [sys.executable, "-m", "rxt_edge.apps.embed_example", str(tiny_package), "--snapshots"]

    def run_example(user: str, message: str) -> tuple[str, str]:
        """(status line, answer): bytes decoded by hand, so a \\r in the answer stays a \\r."""
        out = subprocess.run(
            [*example, str(tmp_path / "snaps"), "--user", user],
            input=(message + "\n").encode(),
            capture_output=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr.decode()
        status, answer = out.stdout.decode("utf-8").split("\n", 1)
        return status, answer.removesuffix("\n")

    assert run_example("ann", MESSAGES[0])[0] == "[ann: new conversation]"
    assert run_example("bob", MESSAGES[2])[0] == "[bob: new conversation]"
    status, answer = run_example("ann", MESSAGES[1])  # a new process: ann's memory comes from disk
    assert status == "[ann: continuing after 1 turns]"
    conv = session.conversation()
    conv.say(MESSAGES[0], max_new_tokens=200)
    assert answer == conv.say(MESSAGES[1], max_new_tokens=200)
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == ["ann.rxtsnap", "bob.rxtsnap"]


# ------------------------------------------------------------------------------------ units


def test_missing_demo_model_names_where_it_looked(tmp_path):
    with pytest.raises(DemoModelMissing, match=r"demo model was not found.*no-demo.*MODEL_DIR"):
        find_demo_model([tmp_path / "no-demo"])
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "manifest.json").write_text("{}")
    assert find_demo_model([tmp_path / "no-demo", tmp_path / "pkg"]) == tmp_path / "pkg"


def test_default_demo_is_the_int8_package():
    """Installed package data (a wheel) or the checkout's models/demo/package-int8: the same files either way."""
    import rxt_edge

    checkout = Path(rxt_edge.__file__).resolve().parent.parent / "models" / "demo" / "package-int8"
    found = find_demo_model()
    assert json.loads((found / "manifest.json").read_text())["precision"] == "int8-dynamic"
    if (checkout / "manifest.json").is_file():
        assert (found / "manifest.json").read_bytes() == (checkout / "manifest.json").read_bytes()


@pytest.mark.parametrize(
    ("option", "kwargs"),
    [
        ("--top-p", {"top_p": 0.0}),
        ("--temperature", {"temperature": -1.0}),
        ("--max-new-tokens", {"max_new_tokens": 0}),
        ("--repetition-penalty", {"repetition_penalty": 0.0}),
        ("--seed", {"seed": 1.5}),
    ],
)
def test_bad_generation_options_name_the_option(option, kwargs):
    with pytest.raises(ChatError, match=re.escape(option)):
        generation_config(**kwargs)


def test_one_line_keeps_answers_on_one_safe_line():
    assert one_line("a\nb\r\nc\rd") == "a b  c d"
    assert "".join(one_line(p) for p in ("x\r", "\ny")) == one_line("x\r\ny")  # same when streamed
    assert one_line("x\x1b[31my\x07") == "x\ufffd[31my\ufffd"
    assert one_line("tab\tand émoji 👍") == "tab\tand émoji 👍"
