"""Bounded lock-free experience ring: many producers push transitions, one consumer drains them.

The core (``cpp/include/itp/ring.hpp``: header-only and pybind-free, so native code such as the
partitioner pushes into the same ring without Python) is a multi-producer single-consumer queue of
fixed-size records ``{state f32[20], action i32, reward f32, next_state f32[20], done u8, propensity
f32, guard_verdicts i32}`` (180 bytes) in 192-byte, 64-byte-aligned cells with sequence numbers:

* a producer claims ``k = min(n, capacity - (tail - head))`` cells with one compare-and-swap on
  ``tail``, writes them and publishes each by setting its sequence number to ``position + 1``;
* the consumer reads cells in order while their sequence number says "published", and frees them
  by advancing ``head``.

Contract:

* ``try_push`` / ``push_batch`` never lock, never block and never overwrite. When the ring is full
  they return ``False`` / fewer than asked, and every record they could not place is added to
  ``dropped`` (a record retried and rejected again is counted again).
* Records pushed by one thread are drained in that thread's order (FIFO per producer).
* ``pushed`` counts records accepted; every accepted record is drained exactly once.
* ``drain`` / ``drain_into`` are single-consumer; concurrent calls are serialised by a
  consumer-side mutex that producers never take.
* ``size = pushed - drained`` is read without a lock: approximate under concurrency (it can
  include records claimed but not yet published).
* Every batch call (``push_batch``, ``drain``, ``drain_into``) releases the GIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.replay import PrioritizedReplay

__all__ = ["MAX_RING_CAPACITY", "ExperienceRing", "TransitionBatch"]

MAX_RING_CAPACITY: int = int(_native.MAX_RING_CAPACITY)


@dataclass(frozen=True, eq=False)
class TransitionBatch:
    """N drained transitions, oldest first (numpy arrays owned by the batch).

    Attributes:
        states: float32[N, 20].
        actions: int64[N], 0..14.
        rewards: float32[N].
        next_states: float32[N, 20].
        dones: float32[N], 0.0 or 1.0.
        propensities: float32[N], the probability with which the behaviour policy chose each logged
            action (in (0, 1]), or None where it was not recorded (transitions logged before
            propensities existed, or pushed by a producer that does not know them). Off-policy
            estimators (:mod:`itp.learning.offpolicy`) can only use rows that have one.
        guard_verdicts: int32[N], the decision guard's verdicts when each action was chosen
            (:func:`itp.learning.offpolicy.decode_guard_verdicts`: which actions the guard let
            through, and the heuristic's action), -1 where the guard did not run; or None where none
            was recorded. The off-policy gate scores a model on a row as the guard would have let it act.
    """

    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.int64]
    rewards: npt.NDArray[np.float32]
    next_states: npt.NDArray[np.float32]
    dones: npt.NDArray[np.float32]
    propensities: npt.NDArray[np.float32] | None = None
    guard_verdicts: npt.NDArray[np.int32] | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])


class ExperienceRing:
    """A bounded lock-free MPSC queue of transitions between producers and a learner.

    Args:
        capacity: minimum number of records, 1..2**22; rounded up to a power of two (at least
            2). The ``capacity`` attribute reports the real value. Memory: 192 bytes per record,
            committed and zeroed at construction (so keep it to what bursts need, e.g. 2**16).

    Raises:
        TypeError, ValueError: ``capacity`` is not an int or is out of range.
    """

    __slots__ = ("_impl",)

    def __init__(self, capacity: int) -> None:
        self._impl = _native.ExperienceRing(capacity)

    @property
    def capacity(self) -> int:
        """Number of records the ring holds (a power of two)."""
        return self._impl.capacity

    @property
    def pushed(self) -> int:
        """Records accepted since construction."""
        return self._impl.pushed

    @property
    def dropped(self) -> int:
        """Records rejected because the ring was full (counted per rejection)."""
        return self._impl.dropped

    @property
    def drained(self) -> int:
        """Records handed to the consumer since construction."""
        return self._impl.drained

    @property
    def size(self) -> int:
        """Approximate number of records waiting (``pushed - drained``, read without a lock)."""
        return self._impl.size

    def __len__(self) -> int:
        return self._impl.size

    def try_push(
        self,
        state: npt.ArrayLike,
        action: int,
        reward: float,
        next_state: npt.ArrayLike,
        done: bool,
        propensity: float | None = None,
        guard_verdicts: int = -1,
    ) -> bool:
        """Push one transition; ``False`` (and ``dropped += 1``) when the ring is full.

        Args and validation as :meth:`PrioritizedReplay.add` (20 finite floats, action 0..14, finite
        reward, done bool or 0/1), plus ``propensity``: the probability in (0, 1] with which the
        behaviour policy chose ``action`` (1.0 for a deterministic policy), or None (the default) when
        the producer does not know it. Unknown is kept as unknown (NaN in :meth:`drain`, NULL in the
        experience store): the off-policy gate leaves such rows out, where a made-up 1.0 would count an
        exploring policy's choice as a deterministic one and bias the estimate. ``guard_verdicts``: the
        decision guard's verdicts when ``action`` was chosen (see :class:`TransitionBatch`), -1 (default)
        for none. Lock-free, never blocks; O(1).

        Raises:
            TypeError, ValueError: naming the bad argument; nothing is pushed or counted.
        """
        if propensity is None:
            return self._impl.try_push(state, action, reward, next_state, done, None, guard_verdicts)
        if isinstance(propensity, bool) or not isinstance(propensity, (int, float, np.floating, np.integer)):
            raise TypeError(f"propensity must be a number or None, got {type(propensity).__name__}")
        return self._impl.try_push(state, action, reward, next_state, done, float(propensity), guard_verdicts)

    def push_batch(
        self,
        states: npt.ArrayLike,
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        next_states: npt.ArrayLike,
        dones: npt.ArrayLike,
        propensities: npt.ArrayLike | None = None,
        guard_verdicts: npt.ArrayLike | None = None,
    ) -> int:
        """Push N transitions in order until the ring is full; returns how many were pushed.

        Rows ``[0, returned)`` were pushed; the rest were not (retry them) and were added to
        ``dropped``. All rows are validated before any is pushed. Array shapes and rules as
        :meth:`PrioritizedReplay.add_batch`; ``propensities``: N values in (0, 1], or None when the
        producer does not know them (every row unknown, see :meth:`try_push`); ``guard_verdicts``: N
        int32 codes, or None (every row -1). Lock-free (one compare-and-swap per call), GIL released;
        O(N).
        """
        return self._impl.push_batch(
            states, actions, rewards, next_states, dones, propensities, guard_verdicts
        )

    def drain(self, max_records: int) -> TransitionBatch:
        """Move up to ``max_records`` (>= 0) waiting records out, oldest first.

        Takes at most what was waiting when the call started (records published meanwhile stay for
        the next call) and stops early at a record claimed but not yet published. Single consumer
        (serialised); GIL released while copying; O(returned). ``propensities`` is always an array:
        NaN for records pushed without one (unknown); so is ``guard_verdicts``: -1 where none.
        """
        states, actions, rewards, next_states, dones, propensities, guards = self._impl.drain(max_records)
        return TransitionBatch(
            states=states, actions=actions, rewards=rewards, next_states=next_states, dones=dones,
            propensities=propensities, guard_verdicts=guards,
        )

    def drain_into(self, replay: PrioritizedReplay, max_records: int) -> int:
        """Move up to ``max_records`` (>= 0) waiting records straight into ``replay``.

        No numpy arrays in between; the propensities are not kept (the replay buffer has no column
        for them). Records failing validation (possible only from native
        producers) are skipped and counted in ``replay.rejected_records``. Returns the number
        stored. Single consumer; GIL released; takes the replay buffer's lock once per chunk of 256
        records and updates its sum tree once per chunk (O(returned + log capacity) per chunk), so it
        is faster than ``drain`` followed by ``add_batch`` (measured 1.7x at 65,536 records).

        Raises:
            TypeError: ``replay`` is not a PrioritizedReplay.
        """
        if not isinstance(replay, PrioritizedReplay):
            raise TypeError(f"replay must be a PrioritizedReplay, got {type(replay).__name__}")
        return self._impl.drain_into(replay._native_buffer, max_records)

    def __repr__(self) -> str:
        return (
            f"ExperienceRing(capacity={self.capacity}, size~{self.size}, pushed={self.pushed}, "
            f"dropped={self.dropped})"
        )
