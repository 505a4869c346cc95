"""GenEval / DPG-Bench folders, the settings table, and the harness integrations, on fakes."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import ShapesEdit, ShapesGen, shapes_edit, shapes_gen
from cheers.evaluation.cli import build_parser, run_eval
from cheers.evaluation.settings import SETTINGS, markdown_table
from cheers.integrations.lmms_eval import CheersLmmsEval
from cheers.integrations.vlmevalkit import CheersVLMEval

R = 8


class FakePipe:
    """Images whose colour is a hash of (prompt, initial noise): reveals seeding and order."""

    def __init__(self) -> None:
        self.model = SimpleNamespace(config=SimpleNamespace(latent_channels=4, grid_size=2))
        self.calls: list[dict] = []

    def text_to_image(self, prompts, **kwargs):
        self.calls.append({"prompts": list(prompts), **kwargs})
        n = kwargs["num_images_per_prompt"]
        latents = kwargs["latents"]
        images = []
        for row, prompt in enumerate(p for p in prompts for _ in range(n)):
            key = prompt.encode() + latents[row].numpy().tobytes()
            rgb = tuple(hashlib.sha256(key).digest()[:3])
            images.append(Image.new("RGB", (R, R), rgb))
        return SimpleNamespace(images=images)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


GENEVAL_LINES = [
    {
        "tag": "single_object",
        "include": [{"class": "bench", "count": 1}],
        "prompt": "a photo of a bench",
    },
    {
        "tag": "colors",
        "include": [{"class": "car", "count": 1, "color": "red"}],
        "prompt": "a photo of a red car",
    },
    {
        "tag": "counting",
        "include": [{"class": "cup", "count": 2}],
        "exclude": [{"class": "cup", "count": 3}],
        "prompt": "a photo of two cups",
    },
]


@pytest.fixture
def metadata(tmp_path):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in GENEVAL_LINES))
    return path


def test_geneval_writes_the_official_layout_byte_for_byte(metadata, tmp_path):
    out = tmp_path / "geneval"
    pipe = FakePipe()
    run_eval(_args("geneval", "--metadata", str(metadata), "--out", str(out), "--no-progress",
                   "--steps", "3"), pipe=pipe)  # fmt: skip
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["00000", "00001", "00002"]
    # Nothing else the evaluator would read: it walks the digit-named folders only.
    assert sorted(p.name for p in out.iterdir()) == [*folders, "cheers_settings.json"]
    assert sorted(p.name for p in (out / "00000").iterdir()) == ["metadata.jsonl", "samples"]
    # As GenEval's own generation script writes it: json.dump of the line, no newline.
    assert (out / "00000" / "metadata.jsonl").read_bytes() == (
        b'{"tag": "single_object", "include": [{"class": "bench", "count": 1}], '
        b'"prompt": "a photo of a bench"}'
    )
    samples = sorted(p.name for p in (out / "00002" / "samples").iterdir())
    assert samples == ["0000.png", "0001.png", "0002.png", "0003.png"]
    call = pipe.calls[0]
    assert (call["num_inference_steps"], call["guidance_scale"], call["time_shift"]) == (
        3, SETTINGS["geneval"].guidance, SETTINGS["geneval"].time_shift
    )  # fmt: skip
    recorded = json.loads((out / "cheers_settings.json").read_text())
    assert recorded["steps"] == 3 and recorded["settings"] == "geneval"


def test_geneval_resumes_and_does_not_depend_on_the_batch_size(metadata, tmp_path):
    one, three = tmp_path / "one", tmp_path / "three"
    for out, batch in ((one, "1"), (three, "3")):
        run_eval(_args("geneval", "--metadata", str(metadata), "--out", str(out),
                       "--batch-size", batch, "--no-progress"), pipe=FakePipe())  # fmt: skip
    for k in range(3):
        for j in range(4):
            name = f"{k:05d}/samples/{j:04d}.png"
            assert (one / name).read_bytes() == (three / name).read_bytes()
    # Four different images per prompt: each has its own noise.
    colours = {Image.open(one / f"00000/samples/{j:04d}.png").getpixel((0, 0)) for j in range(4)}
    assert len(colours) == 4
    # A prompt without its metadata.jsonl is incomplete: only it is drawn again.
    (one / "00001" / "metadata.jsonl").unlink()
    pipe = FakePipe()
    run_eval(_args("geneval", "--metadata", str(metadata), "--out", str(one), "--no-progress"),
             pipe=pipe)  # fmt: skip
    assert [c["prompts"] for c in pipe.calls] == [["a photo of a red car"]]
    assert (one / "00001" / "metadata.jsonl").is_file()


def test_geneval_long_variant_draws_the_rewritten_prompts(tmp_path):
    # The long variant: the same metadata lines with a rewritten (longer) prompt each.
    line = {**GENEVAL_LINES[1], "prompt": "A glossy red sports car parked on a quiet street."}
    text = json.dumps(line)
    metadata = tmp_path / "evaluation_metadata_long.jsonl"
    metadata.write_text(text + "\n")
    out, pipe = tmp_path / "long", FakePipe()
    run_eval(_args("geneval", "--metadata", str(metadata), "--out", str(out), "--no-progress",
                   "--settings", "geneval-long"), pipe=pipe)  # fmt: skip
    assert pipe.calls[0]["prompts"] == [line["prompt"]]
    assert pipe.calls[0]["time_shift"] == 1.0
    assert (out / "00000" / "metadata.jsonl").read_bytes() == text.encode()
    recorded = json.loads((out / "cheers_settings.json").read_text())
    assert (recorded["settings"], recorded["prompt_variant"]) == ("geneval-long", "long")


def test_dpg_writes_a_2x2_grid_per_prompt_file(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "17.txt").write_text("A cat on a red sofa.\n")
    (prompts / "partiprompts3.txt").write_text("Two dogs.")
    out = tmp_path / "dpg"
    pipe = FakePipe()
    run_eval(_args("dpg", "--prompts", str(prompts), "--out", str(out), "--no-progress"),
             pipe=pipe)  # fmt: skip
    assert sorted(p.name for p in out.glob("*.png")) == ["17.png", "partiprompts3.png"]
    assert pipe.calls[0]["num_inference_steps"] == SETTINGS["dpg"].steps == 250
    grid = Image.open(out / "17.png")
    assert grid.size == (2 * R, 2 * R)
    # DPG-Bench crops (0,0,R,R), (R,0,2R,R), (0,R,R,2R), (R,R,2R,2R): images 0, 1, 2, 3.
    drawn = pipe.calls[0]
    assert drawn["prompts"][0] == "A cat on a red sofa."
    again = FakePipe().text_to_image(["A cat on a red sofa."], num_images_per_prompt=4,
                       latents=drawn["latents"][:4]).images  # fmt: skip
    boxes = [(0, 0, R, R), (R, 0, 2 * R, R), (0, R, R, 2 * R), (R, R, 2 * R, 2 * R)]
    for image, box in zip(again, boxes, strict=True):
        assert np.array_equal(np.asarray(grid.crop(box)), np.asarray(image))


def test_bad_inputs_fail_before_any_drawing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "x"}\n')
    pipe = FakePipe()
    with pytest.raises(CheersError, match="prompt"):
        run_eval(_args("geneval", "--metadata", str(bad), "--out", str(tmp_path / "o")), pipe=pipe)
    with pytest.raises(CheersError, match="no such folder"):
        run_eval(_args("dpg", "--prompts", str(tmp_path / "none"), "--out", str(tmp_path / "o")),
                 pipe=pipe)  # fmt: skip
    with pytest.raises(CheersError, match="steps"):
        run_eval(_args("dpg", "--prompts", str(tmp_path), "--out", str(tmp_path / "o"),
                       "--steps", "1"), pipe=pipe)  # fmt: skip
    assert pipe.calls == []


def test_every_command_default_agrees_with_the_settings_table():
    gen = shapes_gen.COMMAND.build(_args("shapes-gen", "--out", "x"))
    row = SETTINGS["shapes-gen"]
    table = (row.steps, row.guidance, row.time_shift, row.images_per_prompt, row.seed)
    built = (gen.num_inference_steps, gen.guidance_scale, gen.time_shift)
    assert (*built, gen.images_per_prompt, gen.seed) == table == (20, 9.5, 0.5, 4, 0)
    # The library's defaults are the same row.
    assert (ShapesGen().num_inference_steps, ShapesGen().time_shift) == (20, 0.5)
    edit = shapes_edit.COMMAND.build(_args("shapes-edit", "--out", "x"))
    assert (edit.num_inference_steps, edit.guidance_scale, edit.time_shift) == (20, 9.5, 0.5)
    assert (ShapesEdit().num_inference_steps, ShapesEdit().time_shift) == (20, 0.5)
    # `cheers generate` samples with the `default` row.
    from cheers.cli import build_parser as cheers_parser

    default = SETTINGS["default"]
    generate = cheers_parser().parse_args(["generate", "a red circle"])
    assert (generate.steps, generate.guidance, generate.shift) == (
        default.steps, default.guidance, default.time_shift
    )  # fmt: skip
    assert generate.num_images == default.images_per_prompt == 1
    assert "| `dpg` | 250 | 9.5 | 0.5 | 4 |" in markdown_table()
    docs = Path(__file__).parents[2] / "docs" / "evaluation.md"
    assert markdown_table() in docs.read_text(encoding="utf-8")  # the docs show this table


class FakeAnswerer:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def understand(self, images, text, **options):
        self.calls.append(("understand", len(images), text, options))
        return "a red circle. And more"

    def chat(self, text, **options):
        self.calls.append(("chat", 0, text, options))
        return "hello"


def test_vlmevalkit_integration_puts_images_first_and_chats_without_them(tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(image)
    pipe = FakeAnswerer()
    model = CheersVLMEval(pipe=pipe, max_new_tokens=7)
    message = [{"type": "text", "value": "What is it?"}, {"type": "image", "value": str(image)}]
    assert model.generate(message, "MMBench") == "a red circle. And more"
    assert pipe.calls[-1][:3] == ("understand", 1, "What is it?")
    assert pipe.calls[-1][3]["max_new_tokens"] == 7
    assert model.generate("Hello") == "hello"
    assert model.generate([str(image), "Describe."]) == "a red circle. And more"
    assert pipe.calls[-1][:3] == ("understand", 1, "Describe.")
    with pytest.raises(CheersError, match="video"):
        model.generate_inner([{"type": "video", "value": "v.mp4"}])


def test_lmms_eval_integration_reads_visuals_and_stops_at_until():
    pipe = FakeAnswerer()
    model = CheersLmmsEval(pipe=pipe)
    image = Image.new("RGB", (16, 16))
    model.task_dict = {"mme": {"test": {3: {"image": image}}}}
    request = SimpleNamespace(
        args=("What is it?", {"max_new_tokens": 5, "until": ["."]}, lambda doc: [doc["image"]],
              3, "mme", "test")
    )  # fmt: skip
    text_only = SimpleNamespace(args=("Hi", {}, None, 0, "t", "s"))
    assert model.generate_until([request, text_only]) == ["a red circle", "hello"]
    assert pipe.calls[0][:3] == ("understand", 1, "What is it?")
    assert pipe.calls[0][3]["max_new_tokens"] == 5
    with pytest.raises(CheersError, match="generate_until"):
        model.loglikelihood([request])
