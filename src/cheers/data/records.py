"""Reading the released training format: JSONL conversations with images.

One JSON object a line::

    {"id": "42", "image": "cat.png",
     "conversations": [{"from": "human", "value": "<im_start><image><im_end>\\nWhat is it?"},
                       {"from": "gpt", "value": "A cat."}]}

``image`` is one path, a comma-separated list (editing: ``"source.png, target.png"``) or a JSON
list, resolved against the file's image folder; images are consumed in order by the ``<image>``
placeholders (human turns, understanding) and ``<image_gen>`` placeholders (gpt turns,
generation targets). A sample without images is a text-only sample.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cheers.errors import DataError

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
IMAGE = "<image>"
IMAGE_GEN = "<image_gen>"
IM_START = "<im_start>"
IM_END = "<im_end>"


@dataclass(frozen=True)
class Record:
    """One validated sample: where it came from, its images and its chat messages."""

    id: str
    images: tuple[Path, ...]
    messages: tuple[tuple[str, str], ...]  # (role, content), roles as in the chat template
    source: str  # "file.jsonl:LINE", for error messages

    @property
    def is_generation(self) -> bool:
        return any(role == "assistant" and IMAGE_GEN in text for role, text in self.messages)


@dataclass
class ReadReport:
    """What reading skipped, by reason, with the first few places."""

    skipped: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.skipped.setdefault(reason, []).append(where)

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def __str__(self) -> str:
        if not self.skipped:
            return "no samples skipped"
        lines = [f"{self.n_skipped} sample(s) skipped:"]
        for reason, places in sorted(self.skipped.items()):
            shown = ", ".join(places[:3]) + (" …" if len(places) > 3 else "")
            lines.append(f"  {len(places)} × {reason} ({shown})")
        return "\n".join(lines)


def read_records(
    path: str | Path,
    image_root: str | Path | None = None,
    on_error: str = "fail",
    report: ReadReport | None = None,
) -> list[Record]:
    """Parse and validate every line of a JSONL file.

    ``on_error``: ``"fail"`` raises :class:`DataError` naming file and line; ``"skip"`` drops
    the sample and counts it in ``report``. Images are checked to exist here; decoding them
    happens when a batch is built.
    """
    if on_error not in ("fail", "skip"):
        raise DataError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise DataError(f"the training data file must be a path, got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data file {path} does not exist; check the path in the config")
    root = Path(image_root) if image_root is not None else path.parent
    report = report if report is not None else ReadReport()
    records = []
    for line_no, record in _iter_lines(path, root):
        if isinstance(record, Record):
            records.append(record)
            continue
        reason, message = record
        where = f"{path}:{line_no}"
        if on_error == "fail":
            raise DataError(
                f"{where}: {message}. Fix the sample, or set bad_samples = 'skip' to skip it"
            )
        report.add(reason, where)
    return records


def _iter_lines(path: Path, root: Path) -> Iterator[tuple[int, Record | tuple[str, str]]]:
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            yield line_no, ("line is not valid JSON", f"not valid JSON ({err.msg})")
            continue
        yield line_no, _parse(data, root, f"{path}:{line_no}")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; unreadable or non-UTF-8 files raise DataError."""
    try:
        with path.open("rb") as handle:
            for line_no, chunk in enumerate(handle, start=1):
                try:
                    # utf-8-sig: a byte-order mark (some Windows editors write one) is not text.
                    yield line_no, chunk.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(
                        f"{path}:{line_no}: not UTF-8 text (byte {chunk[err.start]:#04x} at "
                        f"column {err.start + 1}); JSONL is UTF-8: re-save the file as UTF-8"
                    ) from err
    except OSError as err:
        raise DataError(
            f"cannot read the training data file {path} ({err.strerror or err}); check its "
            "permissions"
        ) from err


def _parse(data: Any, root: Path, where: str) -> Record | tuple[str, str]:
    if not isinstance(data, dict):
        return "not a JSON object", "the line is not a JSON object"
    conversations = data.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return "no conversations", "'conversations' must be a non-empty list of turns"
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES:
            return "bad turn", f"turn {i} needs 'from' (human, gpt or system) and 'value'"
        value = turn.get("value")
        if not isinstance(value, str):
            return "bad turn", f"turn {i} has no string 'value'"
        messages.append((ROLES[turn["from"]], value))
    if not any(role == "assistant" for role, _ in messages):
        return "no answer", "the conversation has no 'gpt' turn to learn from"
    images = _image_paths(data.get("image"), root)
    if isinstance(images, str):
        return "bad image field", images
    n_und = sum(t.count(IMAGE) for r, t in messages if r != "assistant")
    n_gen = sum(t.count(IMAGE_GEN) for r, t in messages if r == "assistant")
    misplaced = sum(t.count(IMAGE_GEN) for r, t in messages if r != "assistant") + sum(
        t.count(IMAGE) for r, t in messages if r == "assistant"
    )
    if misplaced:
        return "misplaced image token", (
            "<image> belongs in human turns and <image_gen> in gpt turns"
        )
    if n_und + n_gen != len(images):
        return "image count mismatch", (
            f"the conversation has {n_und} <image> and {n_gen} <image_gen> placeholder(s) but "
            f"{len(images)} image(s) are listed"
        )
    for _, text in messages:
        for token in (IMAGE, IMAGE_GEN):
            wrapped = text.count(f"{IM_START}{token}{IM_END}")
            if wrapped != text.count(token):
                return "unwrapped image token", (
                    f"every {token} must be written {IM_START}{token}{IM_END}"
                )
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        return "missing image", f"image file(s) not found: {', '.join(missing)}"
    return Record(str(data.get("id", where)), tuple(images), tuple(messages), where)


def _image_paths(field_value: Any, root: Path) -> list[Path] | str:
    if field_value is None:
        return []
    if isinstance(field_value, str):
        names = [name.strip() for name in field_value.split(",") if name.strip()]
    elif isinstance(field_value, list) and all(isinstance(n, str) for n in field_value):
        names = [n.strip() for n in field_value]
    else:
        return "'image' must be a path, a comma-separated list of paths or a list of paths"
    return [Path(n) if Path(n).is_absolute() else root / n for n in names]
