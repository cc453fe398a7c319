"""Sharding: one part of a run, for job arrays (``--num-parts K --part-id I``).

The cases are grouped (by default each case alone; ``flipseg label`` groups the boxes of
one image, so an image's merged mask is written by one part), the groups taken in their
first-appearance order and dealt round-robin: group ``g`` goes to part ``g mod K``. The
parts are disjoint and together they are the whole run, whatever K.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence, TypeVar

from flipseg.errors import FlipsegError

__all__ = ["check_part", "shard"]

T = TypeVar("T")


def check_part(num_parts: int | None, part_id: int | None) -> tuple[int, int] | None:
    """``(K, I)`` from ``--num-parts K --part-id I``, None when neither is given.

    Raises
    ------
    FlipsegError
        Only one of the two given, ``K < 1``, or ``I`` outside ``0 .. K-1``.
    """
    if num_parts is None and part_id is None:
        return None
    if num_parts is None or part_id is None:
        raise FlipsegError("give --num-parts K and --part-id I together (I from 0 to K-1)")
    if num_parts < 1:
        raise FlipsegError(f"--num-parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise FlipsegError(f"--part-id {part_id} is not in 0..{num_parts - 1} (--num-parts {num_parts})")
    return int(num_parts), int(part_id)


def shard(items: Sequence[T], num_parts: int, part_id: int,
          key: Callable[[T], Hashable] | None = None) -> list[T]:
    """The items of part ``part_id`` of ``num_parts`` (input order kept).

    Parameters
    ----------
    items
        The whole run's cases.
    num_parts, part_id
        K and I, ``0 <= I < K`` (see :func:`check_part`).
    key
        Items with the same key stay in one part (default: every item is its own group).
    """
    check_part(num_parts, part_id)
    group_of: dict[Any, int] = {}
    out = []
    for n, item in enumerate(items):
        k = key(item) if key is not None else n
        g = group_of.setdefault(k, len(group_of))
        if g % num_parts == part_id:
            out.append(item)
    return out
