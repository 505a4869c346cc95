"""What a process of a benchmark run has judged so far, on disk: an interrupted run resumes.

A benchmark whose report is written once at the end (the Shapes benchmarks) would otherwise
start again after an interruption. :class:`Journal` appends every judged batch of this process
to its own file, ``<folder>/<name>-rank<R>of<N>-<key>.pkl``, and a rerun with the same settings
(``key``: a digest of ``repr(bench)``, a dataclass benchmark's fields) and the same number of
processes reads it back and skips those items; each process reads and writes only its own
file. Entries are pickled (records and the grid's images), each after its length, and written
with ``flush`` + ``fsync``; a batch cut off by the interruption is dropped, so it runs again.
The files are this run's own scratch space inside ``--out``; they are removed once the report
is written.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cheers.distributed import Shard

#: Bytes of the length written before each entry (a cut-off entry is one shorter than it says).
_LENGTH = 8


class Journal:
    """The judged items of one process of a benchmark run (``(index, judged)`` pairs)."""

    def __init__(self, folder: Path, bench: Any, shard: Shard) -> None:
        self.folder = Path(folder)
        key = hashlib.sha256(repr(bench).encode()).hexdigest()[:16]
        self.path = self.folder / f"{bench.name}-rank{shard.rank}of{shard.world}-{key}.pkl"

    def load(self) -> dict[int, Any]:
        """The judged items written so far, by index (none when there is no journal)."""
        found: dict[int, Any] = {}
        if not self.path.is_file():
            return found
        with self.path.open("r+b") as f:
            while True:
                good = f.tell()
                head = f.read(_LENGTH)
                size = int.from_bytes(head, "little") if len(head) == _LENGTH else -1
                data = f.read(size) if size >= 0 else b""
                if size < 0 or len(data) < size:
                    # The end, or the batch being written when the run stopped: cut it off
                    # (it runs again) so that new batches follow the last whole one.
                    f.truncate(good)
                    return found
                found.update(pickle.loads(data))

    def append(self, judged: Iterable[tuple[int, Any]]) -> None:
        """Add one batch's judged items (on disk before this returns)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = pickle.dumps(dict(judged))
        with self.path.open("ab") as f:
            f.write(len(data).to_bytes(_LENGTH, "little") + data)
            f.flush()
            os.fsync(f.fileno())

    def remove_folder(self) -> None:
        """Delete the journal folder of the run (every process's files), once it is finished."""
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["Journal"]
