"""Small JSONL training files in the released conversation format, for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

QUESTION = "<im_start><image><im_end>\n"  # an image to understand, then the question
GENERATED = "<im_start><image_gen><im_end>"  # the assistant's answer is an image


def write_jsonl(path: Path, rows: list[tuple[str | None, str, str]]) -> Path:
    """One single-turn conversation per (image files or None, human text, assistant text)."""
    lines = []
    for i, (image, human, gpt) in enumerate(rows):
        record = {
            "id": str(i),
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
        }
        if image:
            record["image"] = image
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path
