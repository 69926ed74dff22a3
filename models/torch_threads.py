"""torch's intra-op thread count for a block of work, restored after (the setting is process-wide)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch threads (None: leave torch's setting), then restore the previous count.

    On a busy 2-core host torch's threads spin at barriers: small models run faster on one thread.
    """
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
