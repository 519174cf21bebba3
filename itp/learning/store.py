"""Durable experience store: every reported transition, in an embedded SQLite database.

Why SQLite: a real database with atomic, crash-safe transactions, no server, in the standard library.
The database runs in WAL mode (readers never block the writer; a crash never corrupts it) with
``synchronous=FULL`` (a committed transaction survives a process kill *and* a power loss). The learner
thread appends transitions in one transaction per flush interval, so a transaction costs one fsync per
interval, not one per transition.

Guarantees (with the learner's flush protocol, :mod:`itp.learning.learner`):

* after :meth:`ExperienceStore.append` returns, its rows are durable;
* after a crash (``kill -9``) the database opens intact (``PRAGMA integrity_check`` is ``ok``) and holds
  every committed transaction; only rows not yet committed (at most one flush interval) are lost;
* rows are never pickled: states are float32[20] little-endian blobs (80 bytes).

Schema (``format_version`` 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)          -- format_version, state_layout_version
    transitions(
        id         INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order, never reused
        stored_s   REAL NOT NULL,                     -- UNIX time of the commit, seconds
        state      BLOB NOT NULL,                     -- float32[20], normalised, little-endian
        action     INTEGER NOT NULL CHECK (action BETWEEN 0 AND 14),
        reward     REAL NOT NULL,
        next_state BLOB NOT NULL,                     -- float32[20]
        done       INTEGER NOT NULL CHECK (done IN (0, 1)))

Retention: with ``max_rows`` set, each append deletes the oldest rows beyond it (same transaction).

Thread-safety: one connection, guarded by a lock; any thread may call any method (the learner thread
writes, metrics and tests read).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from itp.actions import NUM_ACTIONS
from itp.ring import TransitionBatch
from itp.state import NUM_FEATURES, STATE_LAYOUT_VERSION

__all__ = ["STORE_FORMAT_VERSION", "ExperienceStore", "StoreError"]

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION: Final = 1
_STATE_BYTES: Final = 4 * NUM_FEATURES
_F32LE: Final = np.dtype("<f4")

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stored_s REAL NOT NULL,
    state BLOB NOT NULL CHECK (length(state) = {_STATE_BYTES}),
    action INTEGER NOT NULL CHECK (action BETWEEN 0 AND {NUM_ACTIONS - 1}),
    reward REAL NOT NULL,
    next_state BLOB NOT NULL CHECK (length(next_state) = {_STATE_BYTES}),
    done INTEGER NOT NULL CHECK (done IN (0, 1))
);
"""


class StoreError(RuntimeError):
    """The database is not an itp experience store, is of another format or layout, or is corrupt."""


class ExperienceStore:
    """Append-only transitions in SQLite (see the module docstring).

    Args:
        path: database file (created with its folder if absent).
        max_rows: keep at most this many newest rows (None: keep everything).
        busy_timeout_s: how long a write waits for another process's lock, seconds.

    Raises:
        StoreError: the file is not an itp experience store, has another format or state layout, or
            fails ``PRAGMA quick_check``.
        ValueError: bad ``max_rows``.
    """

    def __init__(self, path: str | Path, *, max_rows: int | None = None, busy_timeout_s: float = 5.0) -> None:
        if max_rows is not None and (
            isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1
        ):
            raise ValueError(f"max_rows must be None or an int >= 1, got {max_rows!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_rows = max_rows
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"experience store {self.path} is corrupt: {check}")
            self._conn.executescript(_SCHEMA)
            self._check_meta()
            row = self._conn.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM transitions").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable itp experience store: {exc}") from exc
        self._closed = False
        self._count = int(row[0])
        self._last_id = int(row[1])
        self._appended = 0

    def _check_meta(self) -> None:
        want = {
            "format_version": str(STORE_FORMAT_VERSION),
            "state_layout_version": str(STATE_LAYOUT_VERSION),
        }
        have = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if not have:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", list(want.items()))
            return
        for key, value in want.items():
            if have.get(key) != value:
                raise StoreError(
                    f"experience store {self.path} has {key} {have.get(key)!r}, this itp uses {value}"
                )

    # ----------------------------------------------------------------------------------- write
    def append(self, batch: TransitionBatch) -> int:
        """Store ``batch`` in one transaction (durable when this returns); returns the rows added.

        Raises:
            ValueError: wrong array shapes or non-finite values (nothing is stored).
            sqlite3.Error: the database could not be written (nothing is stored).
        """
        n = len(batch)
        if n == 0:
            return 0
        states = np.ascontiguousarray(batch.states, dtype=_F32LE)
        next_states = np.ascontiguousarray(batch.next_states, dtype=_F32LE)
        if states.shape != (n, NUM_FEATURES) or next_states.shape != (n, NUM_FEATURES):
            raise ValueError(
                f"states must be float32[{n}, {NUM_FEATURES}], got {states.shape}, {next_states.shape}"
            )
        rewards = np.asarray(batch.rewards, dtype=np.float64)
        if not (
            np.all(np.isfinite(rewards)) and np.all(np.isfinite(states)) and np.all(np.isfinite(next_states))
        ):
            raise ValueError("transitions must be finite")
        now = time.time()
        rows = [
            (now, states[i].tobytes(), int(a), float(r), next_states[i].tobytes(), int(d != 0))
            for i, (a, r, d) in enumerate(
                zip(batch.actions.tolist(), rewards.tolist(), batch.dones.tolist(), strict=True)
            )
        ]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO transitions (stored_s, state, action, reward, next_state, done) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                last_id = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                deleted = 0
                if self._max_rows is not None and self._count + n > self._max_rows:
                    cur = conn.execute("DELETE FROM transitions WHERE id <= ?", (last_id - self._max_rows,))
                    deleted = cur.rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._count += n - deleted
            self._last_id = last_id
            self._appended += n
        return n

    # ------------------------------------------------------------------------------------ read
    def __len__(self) -> int:
        return self._count

    @property
    def last_id(self) -> int:
        """Id of the newest row (0 when empty); ids grow with insertion order and are never reused."""
        return self._last_id

    @property
    def appended(self) -> int:
        """Rows appended through this object since it was opened."""
        return self._appended

    def recent(self, limit: int) -> TransitionBatch:
        """The newest ``limit`` (>= 0) transitions, oldest first."""
        return self._select(
            "SELECT * FROM (SELECT * FROM transitions ORDER BY id DESC LIMIT ?) ORDER BY id", (int(limit),)
        )

    def upto(self, last_id: int, limit: int) -> TransitionBatch:
        """The newest ``limit`` transitions with ``id <= last_id``, oldest first."""
        return self._select(
            "SELECT * FROM (SELECT * FROM transitions WHERE id <= ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (int(last_id), int(limit)),
        )

    def range(self, first_id: int, last_id: int) -> TransitionBatch:
        """Transitions with ``first_id <= id <= last_id``, in id order."""
        return self._select(
            "SELECT * FROM transitions WHERE id BETWEEN ? AND ? ORDER BY id", (int(first_id), int(last_id))
        )

    def ids(self, limit: int) -> npt.NDArray[np.int64]:
        """Ids of the newest ``limit`` rows, ascending."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM (SELECT id FROM transitions ORDER BY id DESC LIMIT ?) ORDER BY id",
                (int(limit),),
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _select(self, sql: str, params: tuple[int, ...]) -> TransitionBatch:
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        n = len(rows)
        states = (
            np.frombuffer(b"".join(r[2] for r in rows), dtype=_F32LE)
            .reshape(n, NUM_FEATURES)
            .astype(np.float32)
        )
        next_states = (
            np.frombuffer(b"".join(r[5] for r in rows), dtype=_F32LE)
            .reshape(n, NUM_FEATURES)
            .astype(np.float32)
        )
        return TransitionBatch(
            states=states,
            actions=np.array([r[3] for r in rows], dtype=np.int64),
            rewards=np.array([r[4] for r in rows], dtype=np.float32),
            next_states=next_states,
            dones=np.array([r[6] for r in rows], dtype=np.float32),
        )

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL into the database and close (idempotent)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # another process may hold a read lock: the WAL stays valid
                logger.debug("WAL checkpoint skipped: %s", exc)
            self._conn.close()
            self._closed = True

    def __enter__(self) -> ExperienceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
