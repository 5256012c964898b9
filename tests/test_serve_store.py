"""State stores of `rxt-edge serve`: SQLite and a real `redis-server` on loopback (skipped, saying why, if the
binary is absent), the snapshot bytes they hold, and two server processes sharing one Redis."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rxt_edge.snapshot import SnapshotError, snapshot_from_bytes, snapshot_to_bytes

pytest.importorskip("starlette", reason="the [serve] extra is not installed")
from rxt_edge.apps.serve.store import ConflictError, Guard, SQLiteStore, StoreError, open_store  # noqa: E402

FP = "f" * 64
DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "package-int8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {timeout:.0f} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A throwaway redis-server on a free loopback port (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run does)")
    redis = pytest.importorskip("redis", reason="the redis client ([serve] extra) is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: redis.Redis.from_url(url).ping(), "redis-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """Opens the same store again, as another server process would."""
    if request.param == "sqlite":
        url = str(tmp_path / "state.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        open_store(url, FP)._r.flushdb()
    opened = []
    yield lambda: opened.append(open_store(url, FP)) or opened[-1]
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


def stm(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 1, 4, 8)).astype(np.float32)


def test_snapshot_bytes_round_trip_and_checks():
    data = snapshot_to_bytes(stm(), FP, {"turns": 3})
    back, meta = snapshot_from_bytes(data, FP, (2, 1, 4, 8))
    np.testing.assert_array_equal(back, stm()) and meta == {"turns": 3}
    with pytest.raises(SnapshotError, match="different model"):
        snapshot_from_bytes(data, "0" * 64)
    with pytest.raises(SnapshotError, match="shape"):
        snapshot_from_bytes(data, FP, (2, 1, 4, 9))
    flipped = bytearray(data)
    flipped[-40] ^= 1
    with pytest.raises(SnapshotError, match="checksum"):
        snapshot_from_bytes(bytes(flipped), FP)
    with pytest.raises(SnapshotError, match="truncated"):
        snapshot_from_bytes(data[:30], FP)


def test_commit_is_all_or_nothing(store):
    store.commit({"conv_a": b"one"}, {"conv_a": {"turns": 1}})
    assert store.get_state("conv_a") == b"one" and store.get_record("conv_a") == {"turns": 1}
    with pytest.raises(ConflictError):  # another writer advanced the conversation meanwhile
        store.commit(
            {"conv_a": b"two", "resp_b": b"two"}, {"conv_a": {"turns": 2}}, Guard("conv_a", "turns", 0)
        )
    assert store.get_state("conv_a") == b"one" and store.get_state("resp_b") is None
    assert store.get_record("conv_a") == {"turns": 1}
    store.commit({"conv_a": b"two"}, {"conv_a": {"turns": 2}}, Guard("conv_a", "turns", 1))
    assert store.get_state("conv_a") == b"two"
    assert store.delete(["conv_a"]) == 2 and store.get_record("conv_a") is None


def test_lease_is_shared_and_expires(make_store):
    store, other = make_store(), make_store()
    assert store.try_lock("conv_a", "me", 30)
    assert not other.try_lock("conv_a", "you", 30)  # another process sees the lease
    other.unlock("conv_a", "you")  # not its lease: nothing happens
    assert not other.try_lock("conv_a", "you", 30)
    store.unlock("conv_a", "me")
    assert other.try_lock("conv_a", "you", 0.2)
    time.sleep(0.3)
    assert store.try_lock("conv_a", "me", 30)  # an expired lease (a crashed holder) is free


def test_sqlite_failed_commit_writes_nothing(tmp_path):
    s = SQLiteStore(str(tmp_path / "x.sqlite3"), FP)
    with pytest.raises(TypeError):  # a record that is not JSON fails after the state row was written
        s.commit({"resp_a": b"state"}, {"resp_a": {"bad": object()}})
    assert s.get_state("resp_a") is None


def test_damaged_or_foreign_rows_are_refused(tmp_path):
    path = str(tmp_path / "x.sqlite3")
    s = SQLiteStore(path, FP)
    s.commit({"resp_a": b"state", "resp_b": b"state"}, {})
    db = sqlite3.connect(path)
    db.execute("UPDATE states SET data=? WHERE key='resp_a'", (b"stale",))
    db.execute("UPDATE states SET fingerprint='other' WHERE key='resp_b'")
    db.commit()
    with pytest.raises(StoreError, match="damaged"):
        s.get_state("resp_a")
    with pytest.raises(StoreError, match="another model"):
        s.get_state("resp_b")


def test_sqlite_expiry_and_cap(tmp_path):
    s = SQLiteStore(str(tmp_path / "x.sqlite3"), FP, max_states=2)
    for i in range(4):
        s.commit({f"resp_{i}": b"s"}, {})
    assert [s.get_state(f"resp_{i}") for i in range(4)] == [None, None, b"s", b"s"]
    t = SQLiteStore(str(tmp_path / "y.sqlite3"), FP, ttl_s=0.2)
    t.commit({"resp_a": b"s"}, {"resp_a": {}})
    assert t.get_state("resp_a") == b"s"
    time.sleep(0.3)
    assert t.get_state("resp_a") is None and t.get_record("resp_a") is None


def test_store_urls(tmp_path):
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.sqlite3", FP), SQLiteStore)
    with pytest.raises(StoreError, match="unknown store"):
        open_store("mongodb://x", FP)
    with pytest.raises(StoreError, match="cannot reach"):
        open_store(f"redis://127.0.0.1:{free_port()}/0", FP)


def _server(port: int, store_url: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "rxt_edge.apps.cli",
        "serve",
        str(DEMO),
        "--port",
        str(port),
        "--store",
        store_url,
        "--model-name",
        "demo",
        "--max-concurrent",
        "2",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_processes_share_conversations_through_redis(redis_url):
    """A conversation begun on one server process continues on another; so does a previous_response_id."""
    openai = pytest.importorskip("openai", reason="the openai client (dev extra) is not installed")
    ports = [free_port(), free_port()]
    procs = [_server(p, redis_url) for p in ports]
    try:
        for p, proc in zip(ports, procs, strict=True):
            wait_until(
                lambda p=p: urllib.request.urlopen(f"http://127.0.0.1:{p}/health").status == 200,
                f"server on port {p}",
                timeout=90,
            )
            assert proc.poll() is None
        a, b = (openai.OpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="x", max_retries=0) for p in ports)
        conv = a.conversations.create()
        a.responses.create(model="demo", input="I live in Paris.", conversation=conv.id)
        on_b = b.responses.create(model="demo", input="Where do I live?", conversation=conv.id)
        assert "Paris" in on_b.output_text
        assert json.loads(b.conversations.retrieve(conv.id).model_dump_json())["rxt"]["turns"] == 2
        told = b.responses.create(model="demo", input="I live in Rome.")
        b.responses.retrieve(told.id)  # stored before another process reads it
        assert (
            "Rome"
            in a.responses.create(
                model="demo", input="Where do I live?", previous_response_id=told.id
            ).output_text
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
