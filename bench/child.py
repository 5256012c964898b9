"""The onnxruntime measurements, each run in a fresh child process that never imports torch.

A child gets its own peak RSS, and torch's thread pool cannot compete with onnxruntime's. The parent sends one
JSON job on stdin to `python -m rxt_edge.bench.child`; the child prints `P done total` progress lines and one
`R <json>` result line. Answers have a fixed length (`GenerationConfig(ignore_eos=True)`), so turns compare.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from rxt_edge import contract

from .machine import load_average, peak_rss_mb, run_record
from .options import WARMUP_TURN, BenchError, query_ids


def _progress_line(done: int, total: int) -> None:
    print(f"P {done} {total}", flush=True)


def rxt_turns(job: dict[str, Any]) -> dict[str, Any]:
    """Turns of the RxT runtime on a package with fixed-length answers.

    typing_delay None: wait for the memory update between turns, outside the timed region (pure user-facing
    latency); a number: sleep that long after each answer (the user reading and typing), then start the next turn
    whether or not the update is done (the turn itself waits for it, and that wait is part of its latency)."""
    from rxt_edge.sampling import GenerationConfig
    from rxt_edge.session import RxTSession

    session = RxTSession.load(
        job["package"], provider=job["provider"], threads=job["threads"], huge_pages=job.get("huge_pages")
    )
    vocab = session.dims.vocab_size
    rss_loaded = peak_rss_mb()
    n, q, a, delay = job["turns"], job["query_tokens"], job["answer_tokens"], job["typing_delay"]
    fixed = GenerationConfig(max_new_tokens=a, temperature=0.0, ignore_eos=True)
    for w in range(job.get("warmup", 1)):  # first runs allocate and tune kernels
        conv = session.conversation()
        list(conv.generate_ids(query_ids(WARMUP_TURN + w, q, vocab, job["seed"]), config=fixed))
        conv.wait_memory()
    conv = session.conversation()
    turns = []
    for t in range(n):
        answer = list(conv.generate_ids(query_ids(t, q, vocab, job["seed"]), config=fixed))
        s = conv.last_stats
        if turns:
            turns[-1]["update_s"] = conv.last_update_s  # this turn began after the previous update finished
        turns.append(
            {
                "prompt_tokens": s.prompt_tokens,
                "answer_tokens": len(answer),
                "ttft_s": s.time_to_first_token_s,
                "total_s": s.total_s,
                "update_wait_s": s.update_wait_s,
                "update_was_running": bool(s.update_was_running),
                "update_s": None,
            }
        )
        if delay is None:
            conv.wait_memory()
        else:
            time.sleep(delay)
        _progress_line(t + 1, n)
    conv.wait_memory()
    turns[-1]["update_s"] = conv.last_update_s
    pages = session.huge_pages  # the weights on 2 MiB pages (runtimes/huge_pages.py), or why not
    session.close()
    record = run_record(turns, rss_loaded, job["provider"])
    record["huge_pages"] = {
        "collapsed_mib": pages.collapsed_bytes >> 20,
        "seconds": pages.seconds,
        "skipped": pages.skipped,
    }
    return record


def baseline_turns(job: dict[str, Any]) -> dict[str, Any]:
    """Turns of the stateless baseline, which re-reads (or keeps the cache of) the whole conversation."""
    from .baseline import StatelessChat

    n, q, a = job["turns"], job["query_tokens"], job["answer_tokens"]
    per_turn = q + contract.PROMPT_OVERHEAD + a + 1  # [BOS][Q] query [A] answer [EOS]
    kw = {
        "provider": job["provider"],
        "threads": job["threads"],
        "reuse_cache": job["reuse_cache"],
        "prefill_chunk": job["prefill_chunk"],
    }
    warm = StatelessChat(job["baseline_dir"], 4 * per_turn, **kw)
    special = job["special"]
    vocab = warm.dims.vocab_size

    def prompt(t: int) -> list[int]:
        return contract.turn_prompt(special, query_ids(t, q, vocab, job["seed"]))

    for w in range(job.get("warmup", 1)):
        warm.turn(prompt(WARMUP_TURN + w), a)
    del warm
    rss_loaded = peak_rss_mb()
    chat = StatelessChat(job["baseline_dir"], n * per_turn + 8, **kw)
    turns = []
    for t in range(n):
        r = chat.turn(prompt(t), a)
        turns.append(
            {
                "context_tokens": r.context_tokens,
                "prefilled_tokens": r.prefilled_tokens,
                "answer_tokens": len(r.answer),
                "ttft_s": r.time_to_first_token_s,
                "total_s": r.total_s,
            }
        )
        _progress_line(t + 1, n)
    return {**run_record(turns, rss_loaded, job["provider"]), "params": chat.params}


def genai_turns(job: dict[str, Any]) -> dict[str, Any]:
    """Turns of the onnxruntime-genai peer (`rxt_edge.bench.peer`), in a child like the others."""
    from .peer import genai_turns as run

    return run(job)


JOBS = {"rxt_turns": rxt_turns, "baseline_turns": baseline_turns, "genai_turns": genai_turns}


def child_main() -> None:
    """Entry of `python -m rxt_edge.bench.child`: one JSON job on stdin, `R <json>` on stdout."""
    job = json.loads(sys.stdin.read())
    result = JOBS[job["kind"]](job)
    print("R " + json.dumps(result), flush=True)


def run_child(job: dict[str, Any], on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run one measurement job in a fresh interpreter (no torch, own peak RSS)."""
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rxt_edge.bench.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errf,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        result = None
        for line in proc.stdout:
            if line.startswith("P ") and on_progress:
                done, total = line.split()[1:3]
                on_progress(int(done), int(total))
            elif line.startswith("R "):
                result = json.loads(line[2:])
        rc = proc.wait()
        if rc != 0 or result is None:
            errf.seek(0)
            tail = errf.read()[-3000:]
            raise BenchError(f"the {job['kind']} measurement failed (exit code {rc}):\n{tail}")
    result["load_average_after"] = load_average()  # other work on the machine skews timings: recorded
    return result


if __name__ == "__main__":
    child_main()
