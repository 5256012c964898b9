"""Where the server keeps conversation state: a `StateStore` protocol, SQLite (default) and Redis.

Two kinds of rows: *states* (one STM each, the bytes of `rxt_edge.snapshot.snapshot_to_bytes`: fingerprint,
shape, sha256) and *records* (small JSON objects: a response, a conversation). A turn's state and records are
written by one `commit`, one transaction: after a crash the store holds the old rows or the new ones, never a
mix. Keys are server-made ids (`resp_...`, `conv_...`, `chat_<sha256>`); no key ever becomes a path.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse


class StoreError(RuntimeError):
    """The store cannot be used (bad URL, unreachable, or a row is damaged)."""


class ConflictError(StoreError):
    """A guarded record changed since it was read (another process advanced the same conversation)."""


@dataclass(frozen=True)
class Guard:
    """Commit only if record `key` still has `field == value` (None: the record must not exist yet)."""

    key: str
    field: str
    value: Any


class StateStore(Protocol):
    """What the server needs from a store; every method is blocking and thread-safe."""

    def get_state(self, key: str) -> bytes | None: ...

    def get_record(self, key: str) -> dict[str, Any] | None: ...

    def commit(
        self, states: dict[str, bytes], records: dict[str, dict[str, Any]], guard: Guard | None = None
    ) -> None: ...

    def delete(self, keys: Iterable[str]) -> int: ...

    def try_lock(self, key: str, token: str, ttl_s: float) -> bool: ...

    def unlock(self, key: str, token: str) -> None: ...

    def close(self) -> None: ...


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SQLiteStore:
    """One file, WAL journal, one row per state; needs no set-up. Several processes may share the file.

    `ttl_s` expires rows that many seconds after they were written; `max_states` keeps the newest states."""

    def __init__(
        self, path: str, fingerprint: str, ttl_s: float | None = None, max_states: int | None = None
    ):
        self.fingerprint, self.ttl_s, self.max_states = fingerprint, ttl_s, max_states
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
            self._db.executescript(
                """CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
                       checksum TEXT NOT NULL, data BLOB NOT NULL, created REAL NOT NULL, expires REAL);
                   CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, body TEXT NOT NULL,
                       created REAL NOT NULL, expires REAL);
                   CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, token TEXT NOT NULL,
                       expires REAL NOT NULL);
                   CREATE INDEX IF NOT EXISTS states_created ON states(created);"""
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {path!r}: {e}") from e
        self._lock = threading.Lock()  # one connection, used by one thread at a time

    def _expires(self, now: float) -> float | None:
        return None if self.ttl_s is None else now + self.ttl_s

    def get_state(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint, checksum, data FROM states WHERE key=? AND (expires IS NULL OR expires>?)",
                (key, time.time()),
            ).fetchone()
        if row is None:
            return None
        fingerprint, checksum, data = row
        if fingerprint != self.fingerprint:
            raise StoreError(f"state {key} belongs to another model (fingerprint {fingerprint[:16]}...)")
        if _checksum(data) != checksum:
            raise StoreError(f"state {key} is damaged (checksum mismatch)")
        return bytes(data)

    def get_record(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM records WHERE key=? AND (expires IS NULL OR expires>?)", (key, time.time())
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def commit(
        self, states: dict[str, bytes], records: dict[str, dict[str, Any]], guard: Guard | None = None
    ) -> None:
        now = time.time()
        exp = self._expires(now)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # takes the write lock first: the guard read and the writes are one
            try:
                if guard is not None:
                    row = db.execute("SELECT body FROM records WHERE key=?", (guard.key,)).fetchone()
                    if (json.loads(row[0]).get(guard.field) if row else None) != guard.value:
                        raise ConflictError(f"{guard.key} changed while this turn ran")
                for key, data in states.items():
                    db.execute(
                        "INSERT OR REPLACE INTO states VALUES (?,?,?,?,?,?)",
                        (key, self.fingerprint, _checksum(data), data, now, exp),
                    )
                for key, body in records.items():
                    db.execute(
                        "INSERT OR REPLACE INTO records VALUES (?,?,?,?)", (key, json.dumps(body), now, exp)
                    )
                if self.max_states is not None:
                    db.execute(
                        "DELETE FROM states WHERE key NOT IN (SELECT key FROM states ORDER BY created DESC LIMIT ?)",
                        (self.max_states,),
                    )
                if exp is not None:
                    db.execute("DELETE FROM states WHERE expires<=?", (now,))
                    db.execute("DELETE FROM records WHERE expires<=?", (now,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def delete(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        with self._lock:
            db = self._db
            n = 0
            for key in keys:
                n += db.execute("DELETE FROM records WHERE key=?", (key,)).rowcount
                n += db.execute("DELETE FROM states WHERE key=?", (key,)).rowcount
        return n

    def try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """A lease on `key` shared by every process using this file (expires: a crashed holder frees it)."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM locks WHERE key=? AND expires<=?", (key, now))
                got = db.execute(
                    "INSERT OR IGNORE INTO locks VALUES (?,?,?)", (key, token, now + ttl_s)
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return got == 1

    def unlock(self, key: str, token: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM locks WHERE key=? AND token=?", (key, token))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisStore:
    """Redis, so several server processes share conversations. Expiry with `ttl_s`; cap memory with Redis's
    own `maxmemory` + `volatile-lru`/`allkeys-lru` (one STM is a few hundred KB to a few MB)."""

    def __init__(self, url: str, fingerprint: str, ttl_s: float | None = None, prefix: str = "rxt:"):
        try:
            import redis
        except ImportError as e:
            raise StoreError(
                "--store redis://... needs the redis package: pip install 'rxt-edge[serve]'"
            ) from e
        self.fingerprint, self.ttl_s, self.prefix = fingerprint, ttl_s, prefix
        self._redis = redis
        self._r = redis.Redis.from_url(url)
        try:
            self._r.ping()
        except redis.RedisError as e:
            raise StoreError(f"cannot reach the Redis store: {e}") from e

    def _state(self, key: str) -> str:
        return f"{self.prefix}state:{key}"

    def _record(self, key: str) -> str:
        return f"{self.prefix}rec:{key}"

    def get_state(self, key: str) -> bytes | None:
        row = self._r.hgetall(self._state(key))
        if not row:
            return None
        if row[b"fingerprint"].decode() != self.fingerprint:
            raise StoreError(f"state {key} belongs to another model")
        data = row[b"data"]
        if _checksum(data) != row[b"checksum"].decode():
            raise StoreError(f"state {key} is damaged (checksum mismatch)")
        return data

    def get_record(self, key: str) -> dict[str, Any] | None:
        raw = self._r.get(self._record(key))
        return None if raw is None else json.loads(raw)

    def commit(
        self, states: dict[str, bytes], records: dict[str, dict[str, Any]], guard: Guard | None = None
    ) -> None:
        ttl = None if self.ttl_s is None else max(1, int(self.ttl_s))
        with self._r.pipeline(transaction=True) as pipe:
            try:
                if guard is not None:
                    pipe.watch(self._record(guard.key))  # EXEC fails if another process writes it meanwhile
                    raw = pipe.get(self._record(guard.key))
                    if (json.loads(raw).get(guard.field) if raw else None) != guard.value:
                        raise ConflictError(f"{guard.key} changed while this turn ran")
                pipe.multi()
                for key, data in states.items():
                    name = self._state(key)
                    pipe.delete(name)
                    fields = {"fingerprint": self.fingerprint, "checksum": _checksum(data), "data": data}
                    pipe.hset(name, mapping=fields)
                    if ttl:
                        pipe.expire(name, ttl)
                for key, body in records.items():
                    pipe.set(self._record(key), json.dumps(body), ex=ttl)
                pipe.execute()
            except self._redis.WatchError as e:
                raise ConflictError(f"{guard.key if guard else '?'} changed while this turn ran") from e

    def delete(self, keys: Iterable[str]) -> int:
        names = [n for k in keys for n in (self._record(k), self._state(k))]
        return int(self._r.delete(*names)) if names else 0

    _UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """SET NX PX: one holder across every process sharing this Redis (expires: a crashed holder frees it)."""
        return bool(self._r.set(f"{self.prefix}lock:{key}", token, nx=True, px=max(1, int(ttl_s * 1000))))

    def unlock(self, key: str, token: str) -> None:
        self._r.eval(self._UNLOCK, 1, f"{self.prefix}lock:{key}", token)  # only our own lease

    def close(self) -> None:
        self._r.close()


def open_store(
    url: str, fingerprint: str, ttl_s: float | None = None, max_states: int | None = None
) -> StateStore:
    """`redis://host:port/db` (or rediss://), `sqlite:///path`, or a plain file path (SQLite)."""
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        if max_states is not None:
            raise StoreError("--max-states applies to SQLite; cap Redis with its maxmemory setting")
        return RedisStore(url, fingerprint, ttl_s)
    if scheme == "sqlite":
        path = url[len("sqlite://") :].removeprefix("/") if url.startswith("sqlite:///") else ""
        if not path:
            raise StoreError(
                f"bad SQLite URL {url!r}; use sqlite:///relative/path or sqlite:////absolute/path"
            )
        return SQLiteStore(path, fingerprint, ttl_s, max_states)
    if scheme and len(scheme) > 1:
        raise StoreError(f"unknown store {url!r}; use a file path, sqlite:///path or redis://host:port/db")
    return SQLiteStore(url, fingerprint, ttl_s, max_states)
