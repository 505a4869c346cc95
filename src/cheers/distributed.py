"""This process's share of a batch job run under ``torchrun``: which batches it runs, where its
model goes, and the gathering of every rank's results.

    torchrun --nproc-per-node 2 -m cheers eval shapes-gen --out runs/gen
    torchrun --nproc-per-node 2 -m cheers generate --prompts-file prompts.txt --out images/

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) one process owns everything. Under
it, the items are dealt **in whole batches**: batch ``b`` of the single-process run (items
``b·B … b·B + B − 1``) belongs to rank ``b mod N``. Every rank therefore runs exactly the
batches one process would have run, with the same items side by side and each item's own seed,
so the outputs are those of one process. A rank skips the items of its batches that are already
written (it resumes its own items); the results are gathered once, and only rank 0 writes the
report. The process group is gloo: batch work only exchanges Python objects (the judged
records) and barriers, whatever device the models run on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch.distributed as dist

from cheers.errors import CheersError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.world, int) and self.world >= 1 and 0 <= self.rank < self.world):
            raise CheersError(f"rank {self.rank} of {self.world} processes is not a valid place")

    @property
    def main(self) -> bool:
        """Whether this process writes the gathered results (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Shard:
        """This process's shard from ``torchrun``'s variables; joins the (gloo) process group
        when there are several processes.

        Raises:
            CheersError: when the variables are not whole numbers or contradict each other.
        """
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as err:
            raise CheersError(
                f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets them): {err}"
            ) from err
        shard = cls(rank, world, local)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        return shard

    def close(self) -> None:
        """Leave the process group (after the last :meth:`gather`), together: a rank that
        tore down its gloo connections while another still wrote its results aborted that one
        (seen once in CI as SIGABRT, "terminate called without an active exception")."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def device(self, device: str | None) -> str | None:
        """The device of this rank's model: ``cuda`` (asked, or ``None`` on a machine with a GPU)
        becomes ``cuda:LOCAL_RANK`` under torchrun, one GPU per process; others are kept."""
        if self.world == 1 or device not in (None, "cuda"):
            return device
        import torch

        if device is None and not torch.cuda.is_available():
            return device
        return f"cuda:{self.local_rank}"

    def owns(self, batch_index: int) -> bool:
        """Whether batch ``batch_index`` of the single-process run is this rank's."""
        return batch_index % self.world == self.rank

    def batches(
        self, items: Sequence[T], size: int, done: Callable[[int], bool] | None = None
    ) -> list[list[tuple[int, T]]]:
        """This rank's work: its batches of ``items`` (``size`` items each, as one process would
        form them), as ``(index, item)`` pairs, with the items whose index ``done`` says is
        finished left out and the rest re-formed into batches of ``size``."""
        mine = [
            (index, items[index])
            for start in range(0, len(items), size)
            if self.owns(start // size)
            for index in range(start, min(start + size, len(items)))
        ]
        if done is not None:
            mine = [(index, item) for index, item in mine if not done(index)]
        return [mine[start : start + size] for start in range(0, len(mine), size)]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank (``[value]`` alone)."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.world > 1:
            dist.barrier()


__all__ = ["Shard"]
