"""Long sessions: 1,000 turns in one conversation without memory growth or slowdown, and many conversations in
parallel threads that give exactly what they give one after another. Marked slow; runs in CI (tiny model)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rxt_edge import RxTSession

pytestmark = pytest.mark.slow

QUERIES = [
    "Hi, I'm Ann.",
    "Where do I live?",
    "Tell me a joke.",
    "What is my name?",
    "The weather is nice today.",
    "Why did the chicken cross the road?",
]
TOKENS = 8


def rss_kib() -> int | None:
    """Resident set size now (Linux /proc); None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def session(tiny_package):
    with RxTSession.load(tiny_package, threads=1) as s:
        yield s


SOAK_SCRIPT = """
import gc, json, sys, time
import numpy as np
from rxt_edge import RxTSession
from test_soak import QUERIES, TOKENS, rss_kib

session = RxTSession.load(sys.argv[1], threads=1)
tok = session.package.tokenizer
queries = [tok.encode(q) for q in QUERIES]
conv = session.conversation()
times, marks = [], {}
for turn in range(1, 1001):
    started = time.perf_counter()
    answer = conv.interact_ids(queries[turn % len(queries)], TOKENS)
    times.append(time.perf_counter() - started)
    assert 0 <= len(answer) <= TOKENS
    if turn in (100, 1000):
        conv.wait_memory()
        gc.collect()
        marks[turn] = (rss_kib(), len(gc.get_objects()))
stm = conv.stm()
print(json.dumps({"turns": conv.turns, "times": times, "marks": marks,
                  "stm_ok": bool(np.isfinite(stm).all() and not np.array_equal(stm, session.package.initial_stm))}))
"""


def test_thousand_turns_stable_memory_and_speed(tiny_package):
    # A fresh process: RSS inside the test runner moves with whatever other tests allocated and freed.
    out = subprocess.run(
        [sys.executable, "-c", SOAK_SCRIPT, str(tiny_package)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["turns"] == 1000 and result["stm_ok"]
    marks, times = {int(k): v for k, v in result["marks"].items()}, result["times"]

    # No Python objects pile up per turn (a leak of one object per turn would add ~900).
    objects_100, objects_1000 = marks[100][1], marks[1000][1]
    assert objects_1000 - objects_100 < 300, (objects_100, objects_1000)
    # Resident memory: allocator noise is ~1 MiB here; a leak of a few KiB per turn would exceed the slack.
    rss_100, rss_1000 = marks[100][0], marks[1000][0]
    if rss_100 is not None:
        assert rss_1000 - rss_100 < 4096, f"RSS grew from {rss_100} KiB to {rss_1000} KiB over 900 turns"
    # No per-turn slowdown: a sanity check with generous slack (shared CI machines are noisy).
    early, late = statistics.median(times[99:200]), statistics.median(times[899:1000])
    assert late < 3 * early + 0.005, f"median turn time {early * 1e3:.2f} ms -> {late * 1e3:.2f} ms"


def _run(session, worker: int, turns: int) -> tuple[list[list[int]], bytes]:
    tok = session.package.tokenizer
    conv = session.conversation()
    answers = []
    for t in range(turns):
        text = f"{QUERIES[(worker + t) % len(QUERIES)]} {worker}"
        answers.append(conv.interact_ids(tok.encode(text), TOKENS))
    return answers, conv.stm().tobytes()


def test_parallel_conversations_match_sequential(session):
    workers, turns = 8, 20
    sequential = [_run(session, w, turns) for w in range(workers)]
    assert len({a for _, a in sequential}) == workers  # the conversations really differ

    results: list = [None] * workers
    errors: list = []
    barrier = threading.Barrier(workers)

    def work(w: int) -> None:
        try:
            barrier.wait()
            results[w] = _run(session, w, turns)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((w, e))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as finely as possible
    try:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors
    for w in range(workers):
        assert results[w][0] == sequential[w][0], f"worker {w}: answers differ"
        assert results[w][1] == sequential[w][1], f"worker {w}: final STM differs"
    # Conversations never share memory: the package's initial STM is untouched.
    fresh = session.conversation().stm()
    assert np.array_equal(fresh, session.package.initial_stm)
