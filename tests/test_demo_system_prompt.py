"""Issue 19: a model never trained with system prompts refuses one (manifest `system_prompt: false`) instead of
letting it silently degrade the answers: in the runtime, chat (`--system`, `/system`) and the server."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models" / "demo" / "recipe"))

from rxt_edge.conversation import SystemPromptUnsupportedError  # noqa: E402
from rxt_edge.manifest import load_manifest  # noqa: E402


@pytest.fixture(scope="module")
def marked(tiny_package, tmp_path_factory) -> Path:
    from no_system_prompt import mark

    package = tmp_path_factory.mktemp("no_system") / "package"
    shutil.copytree(tiny_package, package)
    mark(package)
    return package


def test_marked_package_refuses_a_system_prompt_and_keeps_its_memory(marked, tiny_package):
    from rxt_edge import RxTSession

    assert load_manifest(marked).system_prompt is False and load_manifest(tiny_package).system_prompt is True
    # stamped no newer than the package needs, so runtimes that read version 3 still load it
    assert load_manifest(marked).format_version == load_manifest(tiny_package).format_version == 3
    with RxTSession.load(marked, threads=1) as session:
        conv = session.conversation()
        before = conv.stm().copy()
        with pytest.raises(SystemPromptUnsupportedError, match="not trained with system prompts"):
            conv.set_system_prompt("You are a pirate.")
        assert np.array_equal(conv.stm(), before) and conv.turns == 0
        assert isinstance(conv.say("Hi", max_new_tokens=2), str)  # the conversation goes on


def test_chat_reports_the_refusal(marked):
    from rxt_edge.apps.chat import ChatError, open_chat

    with pytest.raises(ChatError, match="system prompts"):
        open_chat(marked, threads=1, system="You are a pirate.")


def test_server_answers_400_for_instructions():
    from rxt_edge.apps.serve.errors import api_error

    err = api_error(SystemPromptUnsupportedError("this model was not trained with system prompts"))
    assert (err.status, err.param, err.code) == (400, "instructions", "system_prompt_unsupported")


@pytest.mark.parametrize("name", ["package", "package-int8"])
def test_shipped_demo_packages_take_no_system_prompt(name):
    package = ROOT / "models" / "demo" / name
    if not (package / "manifest.json").exists():
        pytest.skip("demo package not built")
    assert load_manifest(package).system_prompt is False
