"""ExperienceStore: SQLite WAL durability, retention, refusal of foreign or corrupt files, kill -9."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from itp.learning.store import ExperienceStore, StoreError
from itp.ring import TransitionBatch


def batch(n: int, start: int = 0) -> TransitionBatch:
    rng = np.random.default_rng(start)
    return TransitionBatch(
        states=rng.random((n, 20), dtype=np.float32),
        actions=(np.arange(start, start + n) % 15).astype(np.int64),
        rewards=np.arange(start, start + n, dtype=np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=(np.arange(n) % 2).astype(np.float32),
    )


def test_append_then_read_back_exactly(tmp_path: Path) -> None:
    b = batch(100)
    with ExperienceStore(tmp_path / "x.sqlite3") as store:
        assert store.append(b) == 100
        got = store.recent(1000)
        assert len(store) == 100 and store.last_id == 100
    for name in ("states", "actions", "rewards", "next_states", "dones"):
        np.testing.assert_array_equal(getattr(got, name), getattr(b, name))


def test_reopen_after_clean_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    with ExperienceStore(path) as store:
        store.append(batch(50, 0))
        store.append(batch(70, 50))
    with ExperienceStore(path) as store:
        assert len(store) == 120 and store.integrity_check() == "ok"
        np.testing.assert_array_equal(store.recent(120).rewards, np.arange(120, dtype=np.float32))
        np.testing.assert_array_equal(store.upto(60, 10).rewards, np.arange(50, 60, dtype=np.float32))


def test_retention_keeps_newest_rows(tmp_path: Path) -> None:
    with ExperienceStore(tmp_path / "x.sqlite3", max_rows=30) as store:
        for k in range(5):
            store.append(batch(20, 20 * k))
        assert len(store) == 30
        np.testing.assert_array_equal(store.recent(100).rewards, np.arange(70, 100, dtype=np.float32))


def test_bad_rows_store_nothing(tmp_path: Path) -> None:
    with ExperienceStore(tmp_path / "x.sqlite3") as store:
        b = batch(10)
        b.rewards[3] = np.nan
        with pytest.raises(ValueError, match="finite"):
            store.append(b)
        bad_action = batch(10)
        bad_action.actions[0] = 99
        with pytest.raises(sqlite3.IntegrityError):
            store.append(bad_action)
        assert len(store) == 0 and len(store.recent(100)) == 0


def test_foreign_and_corrupt_files_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        ExperienceStore(junk)
    other = tmp_path / "other.sqlite3"
    with ExperienceStore(other) as store:
        store.append(batch(5))
    con = sqlite3.connect(other)
    con.execute("UPDATE meta SET value = '999' WHERE key = 'state_layout_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="state_layout_version"):
        ExperienceStore(other)


def test_propensities_round_trip_with_unknown_rows(tmp_path: Path) -> None:
    with ExperienceStore(tmp_path / "x.sqlite3") as store:
        store.append(batch(5, 0))  # no propensities: NULL
        b = batch(5, 5)
        mu = np.array([1.0, 0.02, np.nan, 0.5, 0.93], dtype=np.float32)
        store.append(TransitionBatch(b.states, b.actions, b.rewards, b.next_states, b.dones, mu))
        assert store.recent(5).propensities is not None
        np.testing.assert_array_equal(store.range(6, 10).propensities, mu)
        assert store.upto(5, 5).propensities is None  # no row of the result has one
        mixed = store.recent(10).propensities
        assert mixed is not None and np.isnan(mixed[:5]).all()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, np.inf])
def test_bad_propensity_stores_nothing(tmp_path: Path, bad: float) -> None:
    with ExperienceStore(tmp_path / "x.sqlite3") as store:
        b = batch(4)
        mu = np.array([0.5, bad, 0.5, 0.5], dtype=np.float32)
        with pytest.raises(ValueError, match="propensities"):
            store.append(TransitionBatch(b.states, b.actions, b.rewards, b.next_states, b.dones, mu))
        with pytest.raises(ValueError, match="propensities"):
            short = np.full(3, 0.5, np.float32)
            store.append(TransitionBatch(b.states, b.actions, b.rewards, b.next_states, b.dones, short))
        assert len(store) == 0


FORMAT_1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stored_s REAL NOT NULL, state BLOB NOT NULL,
    action INTEGER NOT NULL, reward REAL NOT NULL, next_state BLOB NOT NULL, done INTEGER NOT NULL);
INSERT INTO meta VALUES ('format_version', '1');
"""


def write_format_1_store(path: Path, b: TransitionBatch) -> None:
    """A store as itp wrote it before propensities existed (format 1), by hand."""
    from itp.state import STATE_LAYOUT_VERSION

    con = sqlite3.connect(path)
    con.executescript(FORMAT_1_SCHEMA)
    con.execute("INSERT INTO meta VALUES ('state_layout_version', ?)", (str(STATE_LAYOUT_VERSION),))
    con.executemany(
        "INSERT INTO transitions (stored_s, state, action, reward, next_state, done) VALUES (?,?,?,?,?,?)",
        [
            (1.0, b.states[i].astype("<f4").tobytes(), int(b.actions[i]), float(b.rewards[i]),
             b.next_states[i].astype("<f4").tobytes(), int(b.dones[i]))
            for i in range(len(b))
        ],
    )
    con.commit()
    con.close()


def test_format_1_store_is_migrated_in_place_and_reads_unknown_propensities(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = batch(30)
    write_format_1_store(path, old)
    with ExperienceStore(path) as store:
        got = store.recent(100)
        assert len(store) == 30 and got.propensities is None  # old rows: unknown
        np.testing.assert_array_equal(got.rewards, old.rewards)
        np.testing.assert_array_equal(got.states, old.states)
        new = batch(3, 30)
        mu = np.full(3, 0.25, dtype=np.float32)
        store.append(TransitionBatch(new.states, new.actions, new.rewards, new.next_states, new.dones, mu))
        np.testing.assert_array_equal(store.range(31, 33).propensities, mu)
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()[0] == "3"
    columns = [r[1] for r in con.execute("PRAGMA table_info(transitions)")]
    con.close()
    assert columns[-2:] == ["propensity", "guard_verdicts"]
    with ExperienceStore(path) as store:  # reopening a migrated file changes nothing
        assert len(store) == 33 and store.integrity_check() == "ok"
        assert store.recent(100).guard_verdicts is None


FORMAT_2_COLUMN = "ALTER TABLE transitions ADD COLUMN propensity REAL"


def test_format_2_store_gains_guard_verdicts_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    old = batch(10)
    write_format_1_store(path, old)
    con = sqlite3.connect(path)
    con.execute(FORMAT_2_COLUMN)
    con.execute("UPDATE transitions SET propensity = 0.5")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with ExperienceStore(path) as store:
        got = store.recent(100)
        np.testing.assert_array_equal(got.propensities, np.full(10, 0.5, np.float32))
        assert got.guard_verdicts is None  # old rows: none
        new = batch(2, 10)
        codes = np.array([-1, (14 << 16) | (1 << 14) | (1 << 3)], dtype=np.int32)
        store.append(dataclasses.replace(new, guard_verdicts=codes))
        np.testing.assert_array_equal(store.recent(12).guard_verdicts, np.r_[np.full(10, -1), codes])
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()[0] == "3"
    con.close()


@pytest.mark.parametrize(
    "codes",
    [np.array([1 << 15, -1]), np.array([(3 << 16) | 1, -1]), np.array([-2, -1]), np.array([0.5, 1.0])],
)
def test_bad_guard_verdicts_store_nothing(tmp_path: Path, codes: np.ndarray) -> None:
    with ExperienceStore(tmp_path / "s.sqlite3") as store:
        with pytest.raises(ValueError, match="guard_verdicts"):
            store.append(dataclasses.replace(batch(2), guard_verdicts=codes))
        assert len(store) == 0


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    with ExperienceStore(path) as store:
        store.append(batch(2))
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '4' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="format_version '4'"):
        ExperienceStore(path)


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from itp.learning.store import ExperienceStore
    from itp.ring import TransitionBatch
    store = ExperienceStore(sys.argv[1])
    rng = np.random.default_rng(0)
    k = 0
    while True:  # killed by the parent
        n = 500
        b = TransitionBatch(rng.random((n, 20), dtype=np.float32), np.full(n, k % 15, dtype=np.int64),
                            np.full(n, k, dtype=np.float32), rng.random((n, 20), dtype=np.float32),
                            np.zeros(n, dtype=np.float32))
        store.append(b)
        k += 1
        print(k * n, flush=True)
    """
)


def test_kill_9_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stdout is not None
    acknowledged = 0
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 20_000:
            break
    os.kill(proc.pid, signal.SIGKILL)  # while it keeps appending
    proc.wait()
    proc.stdout.close()
    with ExperienceStore(path) as store:
        assert store.integrity_check() == "ok"
        assert len(store) >= acknowledged  # every acknowledged append survived
        assert len(store) % 500 == 0  # transactions are whole: no torn batch
        rows = store.recent(len(store))
        k = rows.rewards.astype(np.int64)
        np.testing.assert_array_equal(rows.actions, k % 15)
        np.testing.assert_array_equal(np.bincount(k), np.full(len(store) // 500, 500))
