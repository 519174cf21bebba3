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

Schema (``format_version`` 3)::

    meta(key TEXT PRIMARY KEY, value TEXT)          -- format_version, state_layout_version
    transitions(
        id         INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order, never reused
        stored_s   REAL NOT NULL,                     -- UNIX time of the commit, seconds
        state      BLOB NOT NULL,                     -- float32[20], normalised, little-endian
        action     INTEGER NOT NULL CHECK (action BETWEEN 0 AND 14),
        reward     REAL NOT NULL,
        next_state BLOB NOT NULL,                     -- float32[20]
        done       INTEGER NOT NULL CHECK (done IN (0, 1)),
        propensity REAL,                              -- behaviour probability of action; NULL: unknown
        guard_verdicts INTEGER)                       -- the decision guard's verdicts; NULL: none

**Propensities** (format 2) are what off-policy evaluation (:mod:`itp.learning.offpolicy`) needs: the
probability the behaviour policy gave each logged action. A row pushed without one (a producer that does
not know it, or a row logged before propensities existed) stores NULL. Reads return
``TransitionBatch.propensities = None`` when no row of the result has one, else float32[N] with NaN
marking the rows without one (so callers select the usable rows with ``np.isfinite``).

**Guard verdicts** (format 3): the decision guard's verdicts when the action was chosen (which actions
it let through, the heuristic's action: :func:`itp.learning.offpolicy.decode_guard_verdicts`), so that
the off-policy gate scores a model as the guard would have let it act. NULL where the guard did not run or
the row predates the column; reads return ``TransitionBatch.guard_verdicts = None`` when no row of the
result has them, else int32[N] with -1 for those rows.

**Migration**: a format-1 or format-2 file is migrated in place when opened: one transaction adds the
missing nullable columns (``propensity`` from format 1, ``guard_verdicts`` from 1 and 2; old rows read as
NULL) and sets ``format_version`` to 3. Nothing else changes, so the migration is O(1) whatever the
file's size.

Retention: with ``max_rows`` set, each append deletes the oldest rows beyond it (same transaction).

Thread-safety: one connection, guarded by a lock; any thread may call any method (the learner thread
writes, metrics and tests read).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from itp.actions import NUM_ACTIONS
from itp.learning.offpolicy import checked_guard_verdicts
from itp.ring import TransitionBatch
from itp.state import NUM_FEATURES, STATE_LAYOUT_VERSION

__all__ = ["STORE_FORMAT_VERSION", "ExperienceStore", "StoreError"]

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION: Final = 3
#: Older formats this version migrates in place when it opens them.
_MIGRATABLE_FORMATS: Final = ("1", "2")
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
    done INTEGER NOT NULL CHECK (done IN (0, 1)),
    propensity REAL CHECK (propensity IS NULL OR (propensity > 0 AND propensity <= 1)),
    guard_verdicts INTEGER CHECK (guard_verdicts IS NULL OR guard_verdicts >= 0)
);
"""
_ADD_PROPENSITY: Final = (
    "ALTER TABLE transitions ADD COLUMN propensity REAL "
    "CHECK (propensity IS NULL OR (propensity > 0 AND propensity <= 1))"
)
_ADD_GUARD_VERDICTS: Final = (
    "ALTER TABLE transitions ADD COLUMN guard_verdicts INTEGER "
    "CHECK (guard_verdicts IS NULL OR guard_verdicts >= 0)"
)


def _checked_propensities(values: npt.ArrayLike | None, n: int) -> list[float | None]:
    """Propensities as SQL values (None for NULL); NaN marks an unknown one."""
    if values is None:
        return [None] * n
    mu = np.asarray(values, dtype=np.float64)
    if mu.shape != (n,):
        raise ValueError(f"propensities must be float[{n}], got shape {mu.shape}")
    known = ~np.isnan(mu)
    bad = known & ~((mu > 0.0) & (mu <= 1.0))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"propensities must be in (0, 1] or NaN (unknown), got {mu[i]} at row {i}")
    return [float(m) if k else None for m, k in zip(mu.tolist(), known.tolist(), strict=True)]


def _checked_guard_verdicts(values: npt.ArrayLike | None, n: int) -> list[int | None]:
    """Guard verdicts as SQL values (None for NULL); -1 marks a row without them."""
    if values is None:
        return [None] * n
    return [None if c == -1 else c for c in checked_guard_verdicts(values, n).tolist()]


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
        if have.get("state_layout_version") != want["state_layout_version"]:
            raise StoreError(
                f"experience store {self.path} has state_layout_version "
                f"{have.get('state_layout_version')!r}, this itp uses {want['state_layout_version']}"
            )
        if have.get("format_version") in _MIGRATABLE_FORMATS:
            self._migrate(str(have["format_version"]))
            return
        if have.get("format_version") != want["format_version"]:
            raise StoreError(
                f"experience store {self.path} has format_version {have.get('format_version')!r}, "
                f"this itp uses {want['format_version']}"
            )

    def _migrate(self, old_format: str) -> None:
        """Format 1 or 2 -> 3 in one transaction: add the missing nullable columns (old rows: NULL)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(transitions)").fetchall()}
            if "propensity" not in columns:
                conn.execute(_ADD_PROPENSITY)
            if "guard_verdicts" not in columns:
                conn.execute(_ADD_GUARD_VERDICTS)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'format_version'", (str(STORE_FORMAT_VERSION),)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info(
            "experience store %s migrated from format %s to %d (columns added; old rows: NULL)",
            self.path, old_format, STORE_FORMAT_VERSION,
        )

    # ----------------------------------------------------------------------------------- write
    def append(self, batch: TransitionBatch) -> int:
        """Store ``batch`` in one transaction (durable when this returns); returns the rows added.

        ``batch.propensities`` may be None (every row stored with NULL) or float[N] with values in
        (0, 1], NaN marking a row without one; ``batch.guard_verdicts`` None or int[N], -1 marking a row
        without them.

        Raises:
            ValueError: wrong array shapes, non-finite values, a propensity outside (0, 1] or an invalid
                guard verdict code (nothing is stored).
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
        propensities = _checked_propensities(batch.propensities, n)
        guards = _checked_guard_verdicts(batch.guard_verdicts, n)
        if not (
            np.all(np.isfinite(rewards)) and np.all(np.isfinite(states)) and np.all(np.isfinite(next_states))
        ):
            raise ValueError("transitions must be finite")
        now = time.time()
        rows = [
            (now, states[i].tobytes(), int(a), float(r), next_states[i].tobytes(), int(d != 0), mu, g)
            for i, (a, r, d, mu, g) in enumerate(
                zip(batch.actions.tolist(), rewards.tolist(), batch.dones.tolist(), propensities, guards,
                    strict=True)
            )
        ]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO transitions "
                    "(stored_s, state, action, reward, next_state, done, propensity, guard_verdicts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        """The newest ``limit`` (>= 0) transitions, oldest first (propensities as in the module docstring)."""
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
        mus = [r[7] for r in rows]
        propensities = (
            np.array([math.nan if m is None else m for m in mus], dtype=np.float32)
            if any(m is not None for m in mus)
            else None
        )
        codes = [r[8] for r in rows]
        guard_verdicts = (
            np.array([-1 if c is None else c for c in codes], dtype=np.int32)
            if any(c is not None for c in codes)
            else None
        )
        return TransitionBatch(
            states=states,
            actions=np.array([r[3] for r in rows], dtype=np.int64),
            rewards=np.array([r[4] for r in rows], dtype=np.float32),
            next_states=next_states,
            dones=np.array([r[6] for r in rows], dtype=np.float32),
            propensities=propensities,
            guard_verdicts=guard_verdicts,
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
