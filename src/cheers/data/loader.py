"""Weighted mixing of data files, a resumable sample stream and length-grouped batches.

The stream is a pure function of (seed, position): epoch e visits every sample of each file
``weight`` times on average (integer part always, fractional part as a random subset), in a
random order drawn from ``seed + e``. A run that stops and resumes from a saved position sees
exactly the same batches, whatever the number of processes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cheers.data.examples import Example, tokenize
from cheers.data.records import ReadReport, read_records
from cheers.errors import DataError
from cheers.tokenizer import CheersTokenizer


@dataclass(frozen=True)
class DataSource:
    """One JSONL file, its image folder and its sampling weight (visits per epoch)."""

    path: str
    weight: float = 1.0
    image_root: str | None = None


class TrainingData:
    """Every example of the mixture, tokenised once."""

    def __init__(
        self,
        sources: Sequence[DataSource],
        tokenizer: CheersTokenizer,
        tokens_per_image: int,
        max_length: int,
        on_error: str = "fail",
    ) -> None:
        if not sources:
            raise DataError("no training data: give at least one JSONL file in data.files")
        self.report = ReadReport()
        self.examples: list[Example] = []
        self.file_of: list[int] = []
        for index, source in enumerate(sources):
            if source.weight < 0:
                raise DataError(f"{source.path}: weight must be ≥ 0, got {source.weight}")
            for record in read_records(source.path, source.image_root, on_error, self.report):
                try:
                    example = tokenize(record, tokenizer, tokens_per_image, max_length)
                except DataError as err:
                    if on_error == "fail":
                        raise
                    self.report.add(str(err).split(": ", 1)[-1].split(";")[0], record.source)
                    continue
                self.examples.append(example)
                self.file_of.append(index)
        self.weights = [s.weight for s in sources]
        self.tokens_per_image = tokens_per_image
        if not self.examples:
            raise DataError(f"no usable training samples ({self.report})")

    def __len__(self) -> int:
        return len(self.examples)

    def reweighted(self, weights: Sequence[float]) -> TrainingData:
        """The same examples drawn with other per-file weights (a stage's curriculum)."""
        if len(weights) != len(self.weights):
            raise DataError(
                f"{len(weights)} data weights for {len(self.weights)} data files; give one "
                "weight per [data] file, in order"
            )
        view = copy.copy(self)
        view.weights = list(weights)
        return view

    def length(self, index: int) -> int:
        return self.examples[index].sequence_length(self.tokens_per_image)

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        """The samples of one epoch, shuffled, each file repeated by its weight."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        chosen: list[int] = []
        for f, weight in enumerate(self.weights):
            members = [i for i, owner in enumerate(self.file_of) if owner == f]
            whole, frac = math.floor(weight), weight - math.floor(weight)
            chosen += members * whole
            extra = round(frac * len(members))
            if extra:
                picks = torch.randperm(len(members), generator=g)[:extra].tolist()
                chosen += [members[i] for i in picks]
        if not chosen:
            raise DataError("every data file has weight 0; give at least one a positive weight")
        order = torch.randperm(len(chosen), generator=g).tolist()
        return [chosen[i] for i in order]


@dataclass
class StreamState:
    """Where the stream is: the start of the current group window and batches served from it."""

    window_start: int = 0
    served: int = 0


class BatchStream:
    """Global batches of ``batch_size`` sample indices, grouped by length.

    Each window of ``batch_size · group_window`` consecutive stream positions is sorted by
    sequence length and cut into batches served in a shuffled order, so padding is small while
    the order stays random. Items are ``(uid, example_index)``; the uid (stream position) seeds
    each sample's own randomness, which makes results independent of how a batch is split.
    """

    def __init__(
        self,
        data: TrainingData,
        batch_size: int,
        seed: int,
        group_window: int = 8,
        state: StreamState | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be ≥ 1, got {batch_size}")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.group_window = max(1, group_window)
        self.state = state or StreamState()
        self._epoch_cache: dict[int, list[int]] = {}
        self._window: list[list[tuple[int, int]]] | None = None

    def _at(self, position: int) -> int:
        epoch, offset = 0, position
        while True:
            order = self._epoch(epoch)
            if offset < len(order):
                return order[offset]
            offset -= len(order)
            epoch += 1

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: self.data.epoch_order(self.seed, epoch)}
        return self._epoch_cache[epoch]

    def _build_window(self) -> list[list[tuple[int, int]]]:
        size = self.batch_size * self.group_window
        start = self.state.window_start
        items = [(start + k, self._at(start + k)) for k in range(size)]
        items.sort(key=lambda item: (self.data.length(item[1]), item[0]))
        batches = [items[k : k + self.batch_size] for k in range(0, size, self.batch_size)]
        g = torch.Generator().manual_seed(self.seed * 7_919 + start)
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def next(self) -> list[tuple[int, int]]:
        """The next global batch as (uid, example index) pairs."""
        if self._window is None:
            self._window = self._build_window()
        batch = self._window[self.state.served]
        self.state.served += 1
        if self.state.served == len(self._window):
            self.state = StreamState(self.state.window_start + self.batch_size * self.group_window)
            self._window = None
        return batch

    @property
    def samples_consumed(self) -> int:
        return self.state.window_start + self.state.served * self.batch_size
