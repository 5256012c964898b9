"""Load run of `rxt-edge serve` on loopback (issue 17's measurement; not a test).

    python -m rxt_edge.bench.serve_load --clients 16 --turns 20 --json-out serve-load.json

Starts `rxt-edge serve` on a free loopback port with a fresh SQLite store, then:
1. K clients x M turns at once through the Responses API (streaming, `previous_response_id`): time to first
   token and answer time by turn number (p50/p99), throughput, and lost or crossed conversations: every
   conversation's answers must equal a sequential replay of it on the same server (greedy decoding).
2. Chat Completions at turn M: the history's chain stored (only the last message runs), the same history edited
   in its first message (the server rebuilds the earlier turns through encoder + memory update only), and a
   stateless decoder of the same dims re-reading the whole history (`rxt_edge.bench.baseline`, when the package
   comes with its checkpoint; needs torch).
Talks HTTP only (the `openai` client): it imports nothing of `rxt_edge.apps`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

NAMES = ["Ann", "Oscar", "Mia", "Liam", "Zoe", "Noah", "Ivy", "Leo", "Ava", "Max", "Eva", "Sam", "Lea", "Tom"]
CITIES = ["Paris", "Lisbon", "Oslo", "Rome", "Berlin", "Madrid", "Vienna", "Prague", "Dublin", "Athens"]
TEMPLATES = ["My name is {name}.", "I live in {city}.", "Hello!", "What is my name?", "Where do I live?"]


def script(client: int, turns: int) -> list[str]:
    """Client `client`'s messages: its own facts, then questions about them (crossed states show)."""
    name, city = NAMES[client % len(NAMES)], CITIES[client % len(CITIES)]
    return [TEMPLATES[t % len(TEMPLATES)].format(name=name, city=city) for t in range(turns)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    package: str | None, store: Path, port: int, concurrent: int, clients: int
) -> subprocess.Popen:
    args = [sys.executable, "-c", "from rxt_edge.apps.cli import main; main()", "serve"]
    args += [package] if package else []
    args += ["--port", str(port), "--store", str(store), "--threads", "1"]
    args += ["--max-concurrent", str(concurrent), "--max-waiting", str(clients)]  # every client may wait
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def one_turn(client, model: str, text: str, previous: str | None) -> dict:
    """One streamed response: its text, id, time to first token and total time."""
    started = time.perf_counter()
    first, parts, rid = None, [], None
    stream = client.responses.create(model=model, input=text, previous_response_id=previous, stream=True)
    for event in stream:
        if event.type == "response.output_text.delta":
            first = first or time.perf_counter()
            parts.append(event.delta)
        elif event.type == "response.completed":
            rid = event.response.id
        elif event.type in ("response.failed", "response.incomplete"):
            rid = event.response.id
    end = time.perf_counter()
    return {"text": "".join(parts), "id": rid, "ttft_s": (first or end) - started, "total_s": end - started}


def conversation(client, model: str, messages: list[str], out: list) -> None:
    previous = None
    for text in messages:
        try:
            turn = one_turn(client, model, text, previous)
        except Exception as e:  # noqa: BLE001 - counted as lost, the run goes on
            out.append(
                {"text": None, "id": None, "error": f"{type(e).__name__}: {e}", "ttft_s": 0, "total_s": 0}
            )
            return
        out.append(turn)
        previous = turn["id"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_run(base_url: str, model: str, clients: int, turns: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    results: list[list[dict]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=conversation, args=(client, model, script(i, turns), results[i]))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    replay = [[] for _ in range(clients)]
    for i in range(clients):  # sequential: one conversation at a time
        conversation(client, model, script(i, turns), replay[i])
    lost = sum(1 for r in results for t in r if not t["id"]) + sum(turns - len(r) for r in results)
    errors = [t["error"] for r in results for t in r if t.get("error")]
    crossed = sum(
        1
        for r, s in zip(results, replay, strict=True)
        for a, b in zip(r, s, strict=False)
        if a["text"] != b["text"]
    )
    by_turn = []
    for n in range(turns):
        ttft = [r[n]["ttft_s"] * 1e3 for r in results if len(r) > n]
        total = [r[n]["total_s"] * 1e3 for r in results if len(r) > n]
        by_turn.append({"turn": n + 1, "ttft_ms_p50": statistics.median(ttft), "ttft_ms_p99": pct(ttft, 0.99),
                        "answer_ms_p50": statistics.median(total), "answer_ms_p99": pct(total, 0.99)})  # fmt: skip
    first, last = by_turn[0], by_turn[-1]
    return {
        "clients": clients,
        "turns": turns,
        "wall_s": wall,
        "turns_per_s": clients * turns / wall,
        "lost": lost,
        "crossed": crossed,
        "errors": errors[:5],
        "by_turn": by_turn,
        "last_over_first_answer_p50": last["answer_ms_p50"] / first["answer_ms_p50"],
        "sample": [t["text"] for t in results[0][:5]],
    }


def chat_at_turn(base_url: str, model: str, turns: int) -> dict:
    """Chat Completions at turn `turns`: stored chain vs rebuilt (edited first message)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    messages: list[dict] = []
    for text in script(99, turns - 1):
        messages.append({"role": "user", "content": text})
        reply = client.chat.completions.create(model=model, messages=messages)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    last = {"role": "user", "content": "Where do I live?"}
    out = {}
    for label, history in (
        ("stored", messages),
        ("rebuilt", [{"role": "user", "content": "Hi there!"}, *messages[1:]]),
    ):
        times = []
        for _ in range(3):  # the stored chain stays stored; an edited history is rebuilt every time
            started = time.perf_counter()
            reply = client.chat.completions.create(model=model, messages=[*history, last])
            times.append((time.perf_counter() - started) * 1e3)
        extra = reply.model_extra.get("rxt", {}) if reply.model_extra else {}
        out[label] = {"ms_median": statistics.median(times), "server": extra}
    out["history_messages"] = len(messages) + 1
    return out


def stateless_at_turn(package: Path, turns: int, answer_tokens: int = 12) -> dict | None:
    """A decoder of the same dims re-reading the whole history at turn `turns` (bench.baseline)."""
    ckpt = package.parent / "checkpoint"
    if not (ckpt / "config.json").exists():
        return None
    from rxt_edge.bench.baseline import StatelessChat, export_baseline
    from rxt_edge.export.checkpoints import load_checkpoint

    from rxt_edge import RxTSession

    model, _ = load_checkpoint(ckpt)
    work = Path(tempfile.mkdtemp(prefix="rxt-serve-load-"))
    export_baseline(model, work / "baseline")
    with RxTSession.load(package) as session:
        tok, sp = session.package.tokenizer, session.package.manifest.special_tokens
        prompts = [[sp["bos"], sp["query"], *tok.encode(t), sp["answer"]] for t in script(99, turns)]
    max_context = sum(len(p) + answer_tokens + 1 for p in prompts) + 8
    chat = StatelessChat(work / "baseline", max_context=max_context, threads=1)
    for p in prompts:
        turn = chat.turn(p, answer_tokens)
    return {"context_tokens": turn.context_tokens, "ttft_ms": turn.time_to_first_token_s * 1e3,
            "answer_ms": turn.total_s * 1e3, "answer_tokens": answer_tokens}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", help="model package (default: the shipped demo model)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rxt-serve-load-"))
    port = free_port()
    concurrent = min(args.clients, os.cpu_count() or 2)
    server = start_server(args.package, work / "state.sqlite3", port, concurrent, args.clients)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        from openai import OpenAI

        model = OpenAI(base_url=base, api_key="unused").models.list().data[0].id
        report = {"machine": {"cpus": os.cpu_count()}, "model": model}
        report["load"] = load_run(base, model, args.clients, args.turns)
        report["chat_completions"] = chat_at_turn(base, model, args.turns)
    finally:
        server.terminate()
        server.wait(30)
    report["stateless"] = stateless_at_turn(Path(args.package), args.turns) if args.package else None
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
