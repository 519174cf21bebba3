"""Prioritized experience replay: a typed wrapper over the native columnar buffer.

The core (``cpp/include/itp/replay.hpp``, ``cpp/src/replay.cpp``) stores transitions column by
column (states float32[C, 20], actions int32[C], rewards float32[C], next_states float32[C, 20],
dones uint8[C], generations uint64[C]) in ring order, overwriting the oldest slot once full, and
keeps priorities in a float64 sum tree with a min tree (``cpp/include/itp/sum_tree.hpp``).

Formulas (proportional prioritization, Schaul et al. 2016):

* priority of slot i: ``p_i = max((|delta_i| + epsilon) ** alpha, 1e-150)`` (rejected > 1e150);
* sampling probability: ``P(i) = p_i / sum_k p_k``;
* importance weight:
  ``w_i = (N * P(i)) ** -beta / max_j (N * P(j)) ** -beta = (p_min / p_i) ** beta``,
  where N is the number of stored transitions and p_min the smallest stored priority (read from
  the min tree). Weights are normalised by the GLOBAL maximum weight, not the batch maximum, so
  w_i lies in (0, 1] and does not depend on which other items were drawn;
* a new transition gets ``max_priority``, the running maximum of every priority assigned so far
  (starts at 1.0, never decreases), so it is replayed soon after it arrives;
* a batch of B is stratified: the total mass is cut into B equal segments and one uniform draw is
  made in each, ``m_b = (b + U_b) * total / B``;
* uniform mode (``prioritized=False``): slots drawn uniformly with replacement, all weights 1.

Generations: ``generation[i]`` counts the writes to slot i (the first write gives 1). ``sample``
returns the generation of each drawn slot; passing it back to ``update_priorities`` turns updates
for slots overwritten in the meantime into ``stale_updates`` instead of corrupting the new
occupant's priority.

Thread-safety: one mutex per buffer serialises every method, so any number of threads may call any
method and each call is atomic. Batch methods (``add_batch``, ``sample``, ``update_priorities``,
``save``) release the GIL while they run. The RNG is seeded (xoshiro256**), so a buffer is
deterministic for a seed and a given sequence of calls.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from itp import _native

__all__ = ["MAX_REPLAY_CAPACITY", "PrioritizedReplay", "SampleBatch"]

logger = logging.getLogger(__name__)

MAX_REPLAY_CAPACITY: int = int(_native.MAX_REPLAY_CAPACITY)
_NUM_FEATURES = 20
_FORMAT_VERSION = 1


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


@dataclass(frozen=True, eq=False)
class SampleBatch:
    """One sampled batch, as preallocated numpy arrays that ``sample`` fills in place.

    Allocate once with :meth:`allocate` and pass as ``out=`` to every ``sample`` call: no
    allocation per step, and ``torch.from_numpy`` views of the arrays stay valid (zero copy). The
    arrays are overwritten by the next ``sample`` into the same batch.

    Attributes:
        states: float32[B, 20], normalised states.
        actions: int64[B], actions 0..14.
        rewards: float32[B].
        next_states: float32[B, 20].
        dones: float32[B], 1.0 where the episode ended.
        weights: float32[B], importance weights in (0, 1] (all 1 in uniform mode).
        indices: int64[B], buffer slots, for ``update_priorities``.
        generations: uint64[B], slot generations at sampling time, for ``update_priorities``.
    """

    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.int64]
    rewards: npt.NDArray[np.float32]
    next_states: npt.NDArray[np.float32]
    dones: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]
    indices: npt.NDArray[np.int64]
    generations: npt.NDArray[np.uint64]

    @classmethod
    def allocate(cls, batch_size: int) -> SampleBatch:
        """Uninitialised arrays for ``batch_size`` (>= 1) transitions.

        Raises:
            TypeError: ``batch_size`` is not an int.
            ValueError: ``batch_size`` < 1.
        """
        b = _check_int(batch_size, "batch_size")
        if b < 1:
            raise ValueError(f"batch_size must be >= 1, got {b}")
        return cls(
            states=np.empty((b, _NUM_FEATURES), dtype=np.float32),
            actions=np.empty(b, dtype=np.int64),
            rewards=np.empty(b, dtype=np.float32),
            next_states=np.empty((b, _NUM_FEATURES), dtype=np.float32),
            dones=np.empty(b, dtype=np.float32),
            weights=np.empty(b, dtype=np.float32),
            indices=np.empty(b, dtype=np.int64),
            generations=np.empty(b, dtype=np.uint64),
        )

    @property
    def batch_size(self) -> int:
        """Number of rows B."""
        return int(self.indices.shape[0])

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class PrioritizedReplay:
    """Prioritized (or uniform) experience replay over a fixed-capacity ring of transitions.

    See the module docstring for the formulas and the concurrency contract. Memory: about
    ``bytes_per_transition * capacity`` bytes of address space, committed only as slots are written.

    Args:
        capacity: number of transitions kept, 1..2**30 (at least 10 million fits comfortably).
        alpha: priority exponent, finite and >= 0 (0 makes prioritized sampling uniform).
        epsilon: added to |td error| before the exponent, finite and >= 0, so zero-error items stay
            sampleable.
        prioritized: False for uniform sampling with all weights 1 (priorities are still tracked).
        seed: RNG seed (>= 0); same seed and same calls give the same samples.

    Raises:
        TypeError, ValueError: a bad argument, named with its value.
        MemoryError: the address space for ``capacity`` cannot be reserved.
    """

    __slots__ = ("_impl",)

    def __init__(
        self,
        capacity: int,
        *,
        alpha: float = 0.6,
        epsilon: float = 1e-6,
        prioritized: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(prioritized, (bool, np.bool_)):
            raise TypeError(f"prioritized must be a bool, got {type(prioritized).__name__}")
        self._impl = _native.PrioritizedReplay(capacity, alpha, epsilon, bool(prioritized), seed)

    @classmethod
    def _from_native(cls, impl: _native.PrioritizedReplay) -> PrioritizedReplay:
        obj = cls.__new__(cls)
        obj._impl = impl
        return obj

    # --- configuration (fixed) and state (locked snapshots) ---

    @property
    def capacity(self) -> int:
        """Maximum number of transitions kept; older ones are overwritten beyond it."""
        return self._impl.capacity

    @property
    def size(self) -> int:
        """Number of transitions stored (<= capacity)."""
        return self._impl.size

    def __len__(self) -> int:
        return self._impl.size

    @property
    def cursor(self) -> int:
        """Slot the next transition is written to (``size`` until full, then the oldest slot)."""
        return self._impl.cursor

    @property
    def alpha(self) -> float:
        """Priority exponent."""
        return self._impl.alpha

    @property
    def epsilon(self) -> float:
        """Offset added to |td error| before the exponent."""
        return self._impl.epsilon

    @property
    def prioritized(self) -> bool:
        """False in uniform mode."""
        return self._impl.prioritized

    @property
    def seed(self) -> int:
        """The RNG seed given at construction."""
        return self._impl.seed

    @property
    def max_priority(self) -> float:
        """Running maximum priority, ``(|delta| + epsilon) ** alpha`` units; given to new items."""
        return self._impl.max_priority

    @property
    def total_priority(self) -> float:
        """Sum of stored priorities (the sum tree's root)."""
        return self._impl.total_priority

    @property
    def min_priority(self) -> float:
        """Smallest stored priority (+inf when empty); the weights are normalised by it."""
        return self._impl.min_priority

    @property
    def stale_updates(self) -> int:
        """Priority updates ignored because their slot was overwritten after it was sampled."""
        return self._impl.stale_updates

    @property
    def rejected_records(self) -> int:
        """Records drained from a ring by ``drain_into`` that failed validation (never stored)."""
        return self._impl.rejected_records

    @property
    def bytes_per_transition(self) -> int:
        """Bytes per slot: 177 of columns + the sum/min tree's share (about 24-48)."""
        return self._impl.bytes_per_transition

    # --- writing ---

    def add(
        self,
        state: npt.ArrayLike,
        action: int,
        reward: float,
        next_state: npt.ArrayLike,
        done: bool,
    ) -> int:
        """Store one transition with priority ``max_priority``; returns its slot index.

        Args:
            state: 20 finite numbers (float32[20] is read without a copy).
            action: int in 0..14.
            reward: finite real number (stored as float32).
            next_state: 20 finite numbers.
            done: bool (or 0/1).

        Raises:
            TypeError, ValueError: naming the bad argument and value; nothing is stored.

        Complexity O(log capacity). Keeps the GIL unless another thread holds the buffer.
        """
        return self._impl.add(state, action, reward, next_state, done)

    def add_batch(
        self,
        states: npt.ArrayLike,
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        next_states: npt.ArrayLike,
        dones: npt.ArrayLike,
    ) -> None:
        """Store N transitions in order (all validated first; nothing is stored if any row is bad).

        Args:
            states: float[N, 20], finite.
            actions: integer dtype [N], values 0..14.
            rewards: float[N], finite.
            next_states: float[N, 20], finite.
            dones: [N] of 0/1 (bool or numeric).

        Complexity O(N + log capacity) per contiguous run of slots. GIL released.
        """
        self._impl.add_batch(states, actions, rewards, next_states, dones)

    # --- sampling and priorities ---

    def sample(self, batch_size: int, beta: float, out: SampleBatch | None = None) -> SampleBatch:
        """Draw ``batch_size`` transitions (with replacement) and their importance weights.

        Args:
            batch_size: 1..size.
            beta: importance-sampling exponent in [0, 1] (the trainer anneals it towards 1).
            out: a preallocated batch of exactly ``batch_size`` rows to fill (no allocation).

        Returns:
            ``out`` (or a new :class:`SampleBatch`), filled.

        Raises:
            ValueError: empty buffer, ``batch_size`` out of range, ``beta`` out of [0, 1], or
                ``out`` of another size; the RNG does not advance.
            TypeError: ``out`` is not a SampleBatch or holds arrays of the wrong dtype.

        Complexity O(batch_size log capacity). GIL released.
        """
        b = _check_int(batch_size, "batch_size")
        if out is None:
            size = self.size
            if size == 0:
                raise ValueError("cannot sample from an empty replay buffer (size 0)")
            if not 1 <= b <= size:
                raise ValueError(f"batch_size must be in 1..size ({size}), got {b}")
            out = SampleBatch.allocate(b)
        elif not isinstance(out, SampleBatch):
            raise TypeError(f"out must be a SampleBatch, got {type(out).__name__}")
        elif b != len(out):
            raise ValueError(f"out holds {len(out)} rows but batch_size is {b}")
        self._impl.sample(
            b,
            beta,
            out.states,
            out.actions,
            out.rewards,
            out.next_states,
            out.dones,
            out.weights,
            out.indices,
            out.generations,
        )
        return out

    def update_priorities(
        self,
        indices: npt.ArrayLike,
        td_errors: npt.ArrayLike,
        generations: npt.ArrayLike | None = None,
    ) -> int:
        """Set ``p = (|td_errors[k]| + epsilon) ** alpha`` for slot ``indices[k]``, k in order.

        Args:
            indices: integer dtype [N], slots in 0..size-1 (as returned by ``sample``).
            td_errors: float32 or float64 [N], TD errors in reward units; the sign is ignored,
                NaN and infinity are rejected.
            generations: optional uint64 [N] from ``sample``; entries whose slot has been
                overwritten since are skipped and counted in ``stale_updates``.

        Returns:
            The number of priorities applied (N minus the stale ones).

        Raises:
            TypeError, ValueError: a bad array, an index out of range, a NaN/infinite td error, or a
                priority above 1e150; nothing changes.

        Complexity O(N log capacity). GIL released.
        """
        return self._impl.update_priorities(indices, td_errors, generations)

    def priorities(self, indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Stored priorities (float64) of the given slots, for diagnostics and tests."""
        return self._impl.get_priorities(indices)

    def check_invariants(self) -> bool:
        """True when every sum/min tree node matches its children exactly and every stored slot
        has a positive priority <= max_priority. O(capacity); for tests."""
        return self._impl.check_invariants()

    # --- persistence ---

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole buffer to ``path`` as an uncompressed ``.npz`` of plain arrays.

        Holds: configuration, rows [0, size), priorities, generations, cursor, max priority,
        stale-update count and the RNG state, so a loaded buffer continues with the same samples. No
        pickle. The snapshot is taken atomically under the buffer's lock (GIL released); the file is
        written to ``path + '.tmp'`` and renamed, so a crash never leaves a half-written file at
        ``path``. The name is used as given (no ``.npz`` appended). O(size).
        """
        snap: dict[str, Any] = self._impl.snapshot()
        arrays: dict[str, npt.NDArray[Any]] = {
            "format_version": np.asarray(_FORMAT_VERSION, dtype=np.int64),
            "capacity": np.asarray(snap["capacity"], dtype=np.int64),
            "alpha": np.asarray(snap["alpha"], dtype=np.float64),
            "epsilon": np.asarray(snap["epsilon"], dtype=np.float64),
            "prioritized": np.asarray(snap["prioritized"], dtype=np.bool_),
            "seed": np.asarray(snap["seed"], dtype=np.uint64),
            "size": np.asarray(snap["size"], dtype=np.int64),
            "cursor": np.asarray(snap["cursor"], dtype=np.int64),
            "max_priority": np.asarray(snap["max_priority"], dtype=np.float64),
            "stale_updates": np.asarray(snap["stale_updates"], dtype=np.uint64),
            "rng_state": snap["rng_state"],
        }
        for key in _ARRAY_SPECS:
            arrays[key] = snap[key]
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
        os.replace(tmp, target)
        logger.info("saved replay buffer: %d transitions to %s", snap["size"], target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrioritizedReplay:
        """Rebuild a buffer written by :meth:`save` (``np.load(allow_pickle=False)``).

        Raises:
            ValueError: a truncated or non-npz file, a missing key, a wrong dtype or shape, or an
                invalid value (NaN state, action out of range, priority out of range, inconsistent
                cursor...), named in the message.
            OSError: the file cannot be opened (FileNotFoundError if it does not exist).
        """
        target = Path(path)
        with open(target, "rb") as f:
            try:
                loaded = np.load(f, allow_pickle=False)
            except (zipfile.BadZipFile, EOFError) as exc:
                raise ValueError(f"{target} is not a complete .npz replay file: {exc}") from exc
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"{target} is not an .npz replay file (got a single array)")
            with loaded as data:
                try:
                    fields: dict[str, Any] = {k: data[k] for k in data.files}
                except (zipfile.BadZipFile, EOFError, OSError) as exc:
                    raise ValueError(f"{target} is corrupt or truncated: {exc}") from exc
        snapshot = _validated_snapshot(fields)
        buffer = cls._from_native(_native.PrioritizedReplay.from_snapshot(snapshot))
        logger.info("loaded replay buffer: %d transitions from %s", buffer.size, target)
        return buffer

    @property
    def _native_buffer(self) -> _native.PrioritizedReplay:
        """The compiled buffer (for ExperienceRing.drain_into)."""
        return self._impl

    def __repr__(self) -> str:
        mode = "prioritized" if self.prioritized else "uniform"
        return (
            f"PrioritizedReplay(capacity={self.capacity}, size={self.size}, {mode}, "
            f"alpha={self.alpha}, epsilon={self.epsilon})"
        )


# key -> (dtype, trailing shape); the leading dimension is the stored size.
_ARRAY_SPECS: dict[str, tuple[type[np.generic], tuple[int, ...]]] = {
    "states": (np.float32, (_NUM_FEATURES,)),
    "actions": (np.int32, ()),
    "rewards": (np.float32, ()),
    "next_states": (np.float32, (_NUM_FEATURES,)),
    "dones": (np.uint8, ()),
    "priorities": (np.float64, ()),
    "generations": (np.uint64, ()),
}
_SCALAR_SPECS: dict[str, str] = {
    "format_version": "i",
    "capacity": "i",
    "alpha": "f",
    "epsilon": "f",
    "prioritized": "b",
    "seed": "u",
    "size": "i",
    "cursor": "i",
    "max_priority": "f",
    "stale_updates": "u",
}


def _validated_snapshot(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Checks keys, dtypes and shapes of a loaded file; returns the dict from_snapshot expects."""
    out: dict[str, Any] = {}
    for key, kind in _SCALAR_SPECS.items():
        if key not in fields:
            raise ValueError(f"replay file is missing '{key}'")
        value = np.asarray(fields[key])
        if value.shape != () or value.dtype.kind != kind:
            raise ValueError(
                f"replay file field '{key}' must be a scalar of kind '{kind}', "
                f"got dtype {value.dtype} shape {value.shape}"
            )
        out[key] = value.item()
    if out["format_version"] != _FORMAT_VERSION:
        raise ValueError(f"replay file format_version must be {_FORMAT_VERSION}, got {out['format_version']}")
    del out["format_version"]
    size = int(out["size"])
    rng_state = np.asarray(fields.get("rng_state"))
    if "rng_state" not in fields or rng_state.dtype != np.uint64 or rng_state.shape != (4,):
        raise ValueError(
            f"replay file field 'rng_state' must be uint64[4], got dtype {rng_state.dtype} "
            f"shape {rng_state.shape}"
        )
    out["rng_state"] = rng_state
    for key, (dtype, tail) in _ARRAY_SPECS.items():
        if key not in fields:
            raise ValueError(f"replay file is missing '{key}'")
        arr = np.asarray(fields[key])
        want = (size, *tail)
        if arr.dtype != dtype or arr.shape != want:
            raise ValueError(
                f"replay file field '{key}' must be {np.dtype(dtype).name}{list(want)}, "
                f"got {arr.dtype}{list(arr.shape)}"
            )
        out[key] = np.ascontiguousarray(arr)
    return out
