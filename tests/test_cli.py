"""The `rxt-edge` command line as a user meets it: help, options, errors in CLI terms, info, --save, the wheel."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
from rxt_edge.apps import cli
from rxt_edge.apps.chat import TURN_ERRORS, Chat, Turn, answer, run_command
from rxt_edge.apps.licence import declared_licence
from typer.main import get_command
from typer.testing import CliRunner

from rxt_edge import GenerationConfig, RxTSession
from rxt_edge.manifest import load_manifest
from rxt_edge.snapshot import load_snapshot

REPO = Path(__file__).resolve().parents[1]
COMMANDS = tuple(get_command(cli.app).commands)  # every command, those added later too


def rxt(*args: str, stdin: str | None = None, columns: int = 80):
    """Run the CLI in this process (no interpreter start-up): the result has exit_code, stdout, stderr."""
    return CliRunner().invoke(cli.app, list(args), input=stdin, env={"COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def session(tiny_package):
    with RxTSession.load(tiny_package) as s:
        yield s


# ------------------------------------------------------------------------------------ help and conventions


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_readable_at_80_columns(command):
    out = rxt(command, "-h")
    assert out.exit_code == 0, out.stderr
    assert out.stdout == rxt(command, "--help").stdout
    text = out.stdout
    assert "<bool>" not in text and "<list[" not in text
    assert "…" not in text and "..." not in text  # nothing cut
    assert max(len(line) for line in text.splitlines()) <= 80
    options = get_command(cli.app).commands[command].params
    undescribed = [p.name for p in options if getattr(p, "help", None) in (None, "")]
    assert undescribed == []


def test_version_and_top_level_help():
    from rxt_edge import __version__

    out = rxt("--version")
    assert out.exit_code == 0 and out.stdout.strip() == f"rxt-edge {__version__}"
    top = rxt("-h").stdout
    listed = top[top.index("Commands:") :]
    assert all(re.search(rf"^  {c} +\S", listed, re.M) for c in COMMANDS) and "..." not in listed


def test_json_is_always_a_flag():
    group = get_command(cli.app)
    for name, command in group.commands.items():
        for p in command.params:
            if "--json" in p.opts:
                assert p.is_flag, f"{name} --json takes a value"
    assert "--json-out" in {o for p in group.commands["bench"].params for o in p.opts}


def test_chat_defaults_are_the_apis():
    params = {p.name: p for p in get_command(cli.app).commands["chat"].params}
    api = GenerationConfig()
    for name in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "truncate"):
        assert params[name].default == getattr(api, name), name


def test_one_preset_rule_for_quantize_and_bench():
    from rxt_edge.export import quantize

    assert cli.QUANT_SCHEMES == quantize.SCHEMES
    assert cli.QUANT_PRESETS == tuple(quantize.DYNAMIC_PRESETS)
    assert cli.DEFAULT_QUANT_PRESET == quantize.DEFAULT_PRESET
    bench = {p.name: p for p in get_command(cli.app).commands["bench"].params}
    assert bench["quant_preset"].default == quantize.DEFAULT_PRESET
    from rxt_edge.bench.options import DEFAULT_QUANT_SCHEME

    assert bench["quantize"].default == DEFAULT_QUANT_SCHEME  # the measured default, quantize's own
    quantize_cmd = {p.name: p for p in get_command(cli.app).commands["quantize"].params}
    assert DEFAULT_QUANT_SCHEME == quantize_cmd["scheme"].default


# ------------------------------------------------------------------------------------ errors in CLI terms


def test_quantize_refuses_bad_options_before_any_work(tmp_path, tiny_package):
    out_dir = tmp_path / "q"
    bad = rxt("quantize", str(tiny_package), "-o", str(out_dir), "--scheme", "int3")
    assert bad.exit_code == 2
    assert (
        "'int3' is not one of 'int8', 'int4', 'int8-dynamic', 'int8-block', 'int4-block', 'fp16'"
        in bad.stderr
    )
    assert "quantizing" not in bad.stderr and not out_dir.exists()
    for args, message in [
        (["--scheme", "int4-block", "--preset", "avx2"], "--preset applies to --scheme int8-dynamic only"),
        (["--scheme", "fp16", "--per-tensor"], "--per-tensor applies to --scheme int8-dynamic only"),
        (["--scheme", "int8-dynamic", "--block-size", "64"], "--block-size applies to --scheme int8, int4"),
        (["--block-size", "48"], "--block-size 48: choose one of 16, 32, 64, 128, 256"),
        (["--graphs", "decoder,attention"], "--graphs: attention; choose from decoder, encoder"),
    ]:
        out = rxt("quantize", str(tiny_package), "-o", str(out_dir), *args)
        assert out.exit_code == 2 and message in out.stderr, out.stderr
        assert "[" not in out.stderr and not out_dir.exists()


def test_quantize_says_which_memory_kv_form_it_wrote(tmp_path, tiny_package):
    """The tiny package's K/V are below the int8 size rule: auto writes float; asked for, int8 (format 4)."""
    for args, form, version in (([], "float", 3), (["--memory-kv", "int8"], "int8", 4)):
        out_dir = tmp_path / form
        r = rxt("quantize", str(tiny_package), "-o", str(out_dir), "--no-report", *args, columns=300)
        assert r.exit_code == 0, r.stderr
        assert f"(int8, graphs: decoder; memory K/V: {form})" in r.stderr
        m = load_manifest(out_dir)
        assert (m.quantization["memory_kv"], m.format_version) == (form, version)


def test_export_and_verify_say_when_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    for args in (["export", "ckpt", "-o", "out"], ["verify", "pkg", "--against", "ckpt"]):
        out = rxt(*args)
        assert out.exit_code == 2 and "pip install 'rxt-edge[export]'" in out.stderr
        assert "Traceback" not in out.stderr


def test_too_long_message_names_truncate_option(tiny_package, session):
    long = "Paris " * 1200
    out = rxt("chat", str(tiny_package), "-m", long, "--max-new-tokens", "4")
    assert out.exit_code == 1
    assert "use --truncate" in out.stderr and "truncate=True" not in out.stderr
    kept = rxt("chat", str(tiny_package), "-m", long, "--max-new-tokens", "4", "--truncate", "--json")
    assert kept.exit_code == 0, kept.stderr
    assert json.loads(kept.stdout)["answer"] == session.conversation().say(long, 4, truncate=True)


def test_repetition_penalty_reaches_the_model(tiny_package, session):
    message = "Tell me a story about a cat."
    plain = session.conversation().say(message, 40)
    penalised = session.conversation().say(message, 40, repetition_penalty=3.0)
    assert (
        plain != penalised
    )  # the option changes answers on this model: the comparison below means something
    out = rxt(
        "chat",
        str(tiny_package),
        "-m",
        message,
        "--max-new-tokens",
        "40",
        "--repetition-penalty",
        "3",
        "--json",
    )
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["answer"] == penalised
    bad = rxt("chat", str(tiny_package), "-m", "hi", "--repetition-penalty", "0")
    assert bad.exit_code == 2 and "--repetition-penalty must be > 0" in bad.stderr


class RecordingUI:
    """What `answer` and `run_command` print, recorded."""

    def __init__(self, tmp_path: Path):
        self.console = type("C", (), {"file": open(tmp_path / "screen", "w")})()  # noqa: SIM115
        self.calls: list[tuple[str, str]] = []

    def answer_start(self) -> None:
        self.calls.append(("label", ""))

    def piece(self, text: str) -> None:
        self.calls.append(("piece", text))

    def answer_end(self, turn: Turn) -> None:
        self.calls.append(("end", turn.answer))

    def info(self, text: str) -> None:
        self.calls.append(("info", text))

    def error(self, text: str) -> None:
        self.calls.append(("error", text))


def test_refused_turn_shows_only_its_error(session, tmp_path):
    chat, ui = Chat(session, GenerationConfig(max_new_tokens=4)), RecordingUI(tmp_path)
    answer(chat, ui, "Paris " * 1200)
    assert [kind for kind, _ in ui.calls] == ["error"]  # no "rxt ›" label before it
    assert "use --truncate" in ui.calls[0][1]
    ui.calls.clear()
    answer(chat, ui, "Hello")
    kinds = [kind for kind, _ in ui.calls]
    assert kinds[0] == "label" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"piece"}
    assert TURN_ERRORS  # the refused turn's error type is one the chat survives


def test_save_command_refuses_missing_directory_and_existing_file(session, tmp_path):
    chat, ui = Chat(session), RecordingUI(tmp_path)
    run_command(chat, ui, f"/save {tmp_path / 'nope' / 'x.rxtsnap'}")
    ((kind, text),) = ui.calls
    assert kind == "error" and text.endswith(f"the directory {tmp_path / 'nope'} does not exist")
    assert ".tmp" not in text and not (tmp_path / "nope").exists()

    target = tmp_path / "x.rxtsnap"
    target.write_bytes(b"keep me")
    ui.calls.clear()
    run_command(chat, ui, f"/save {target}")
    assert ui.calls == [("error", f"{target} exists; /save! {target} replaces it")]
    assert target.read_bytes() == b"keep me"
    run_command(chat, ui, f"/save! {target}")
    np.testing.assert_array_equal(load_snapshot(target, session.package.fingerprint)[0], chat.conv.stm())
    run_command(chat, ui, f"/save {tmp_path}")
    assert "it is a directory" in ui.calls[-1][1]


# ------------------------------------------------------------------------------------ scripted runs


def test_save_keeps_the_memory_between_scripted_runs(tiny_package, session, tmp_path):
    snap = tmp_path / "zed.rxtsnap"
    first = rxt(
        "chat", str(tiny_package), "-m", "My name is Zed.", "--max-new-tokens", "20", "--save", str(snap)
    )
    assert first.exit_code == 0, first.stderr
    conv = session.conversation()
    conv.say("My name is Zed.", 20)
    stm, meta = load_snapshot(snap, None)  # the documented way to read a snapshot's metadata
    np.testing.assert_allclose(stm, conv.stm(), atol=1e-5)
    assert meta == {"turns": 1, "app": "rxt-edge chat"}

    args = ["--resume", str(snap), "--save", str(snap), "--max-new-tokens", "20", "--json"]
    second = rxt("chat", str(tiny_package), *args, stdin="What is my name?\n")
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["answer"] == conv.say("What is my name?", 20)
    assert load_snapshot(snap, None)[1]["turns"] == 2  # replaced: a script resumes and saves one file


def test_save_to_a_missing_directory_fails_before_any_turn(tiny_package, tmp_path):
    out = rxt("chat", str(tiny_package), "-m", "hi", "--save", str(tmp_path / "nope" / "x.rxtsnap"))
    assert out.exit_code == 2 and out.stdout == ""
    assert "does not exist" in out.stderr


def test_piped_slash_lines_are_messages_with_a_note(tiny_package, session, tmp_path):
    out = rxt("chat", str(tiny_package), "--max-new-tokens", "8", stdin=f"/save {tmp_path / 'x.rxtsnap'}\n")
    assert out.exit_code == 0, out.stderr
    assert "slash commands work at a terminal only" in out.stderr and "--save" in out.stderr
    assert not (tmp_path / "x.rxtsnap").exists()
    assert out.stdout.count("\n") == 1  # answered as a message


# ------------------------------------------------------------------------------------ info and licences


def test_info_describes_a_package(tiny_package):
    out = rxt("info", str(tiny_package), "--json")
    assert out.exit_code == 0, out.stderr
    info = json.loads(out.stdout)
    manifest = json.loads((tiny_package / "manifest.json").read_text())
    assert {k: info["model"][k] for k in manifest["model"]} == manifest["model"]
    assert info["model"]["max_query_tokens"] == manifest["model"]["max_seq_len"] - 5
    sizes = {p.name: p.stat().st_size for p in tiny_package.iterdir() if p.name != "manifest.json"}
    assert info["files"] == sizes and info["total_bytes"] == sum(sizes.values())
    assert info["precision"] == "fp32" and info["quantization"] is None
    assert info["source"] == manifest["source"]
    text = rxt("info", str(tiny_package)).stdout
    assert (
        f"messages up to {info['model']['max_query_tokens']} tokens" in text and "quantization none" in text
    )


def test_info_on_the_demo_and_on_a_non_package(tmp_path):
    demo = rxt("info")
    assert demo.exit_code == 0 and "quantization int8-dynamic (preset avx2" in demo.stdout
    bad = rxt("info", str(tmp_path))
    assert bad.exit_code == 2 and "not an rxt-edge package" in bad.stderr and "Traceback" not in bad.stderr


def test_declared_licence(tmp_path):
    assert declared_licence(tmp_path) is None
    card = (
        "---\nlicense: other\nlicense_name: raml-1.0\nlicense_link: https://example.org/RAML\n---\n# Model\n"
    )
    (tmp_path / "README.md").write_text(card)
    assert declared_licence(tmp_path) == "raml-1.0 (README.md, https://example.org/RAML)"
    (tmp_path / "config.json").write_text(json.dumps({"license": "apache-2.0"}))
    assert declared_licence(tmp_path) == "apache-2.0 (config.json)"
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("# no front matter\nlicense: mit\n")
    (other / "LICENSE").write_text("\n  Reactive AI Framework License (RAFL) v1.0\n...")
    assert declared_licence(other) == "Reactive AI Framework License (RAFL) v1.0 (LICENSE)"


@pytest.mark.slow
def test_export_prints_the_checkpoints_licence(cli_unfused_export):
    """A checkpoint whose model card declares a licence, exported by `rxt-edge export` (the session's shared
    --no-fuse export in conftest.py, whose checkpoint carries that README.md)."""
    out, package = cli_unfused_export
    assert out.exit_code == 0, out.stderr
    assert "licence: the checkpoint declares raml-1.0 (README.md)" in out.stderr
    assert (package / "manifest.json").is_file()


# ------------------------------------------------------------------------------------ the wheel


@pytest.mark.slow
def test_wheel_install_chats_with_the_shipped_demo(tmp_path):
    """`pip install .` (not editable), then `rxt-edge chat` from anywhere: the demo model is in the wheel."""
    src = tmp_path / "src"
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in setup["package-dir"].values():  # only what the wheel is built from
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    built = subprocess.run(  # no build isolation: offline, with this environment's setuptools
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("rxt_edge-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    vsite = subprocess.run(
        [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies (numpy, onnxruntime, typer, ...) come from this environment, after the venv's own
    # site-packages, so the wheel's rxt_edge is the one imported (a .pth path line runs no editable hook)
    here = sysconfig.get_paths()
    Path(vsite, "_deps.pth").write_text(
        "".join(f"{d}\n" for d in dict.fromkeys((here["purelib"], here["platlib"])))
    )
    installed = subprocess.run(
        [*pip, "--python", str(vpy), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr

    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [vpy, "-c", "import rxt_edge.apps.demo as d; print(d.__file__); print(d.find_demo_model())"],
        cwd=away, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, demo = where.stdout.splitlines()
    assert module.startswith(vsite) and demo.startswith(vsite)
    exe = venv / ("Scripts/rxt-edge.exe" if os.name == "nt" else "bin/rxt-edge")
    out = subprocess.run(
        [exe, "chat", "-m", "hi"], cwd=away, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n") and out.stdout.count("\n") == 1 and out.stdout.strip()
