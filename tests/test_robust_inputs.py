"""Images, tokenizer calls, config.json values, training data files and config paths: bad input
is a CheersError naming it and the fix, never another exception or a silent guess (issue 15)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cheers.config import CheersConfig
from cheers.data.records import read_records
from cheers.errors import CheckpointError, ConfigError, DataError, ImageError, PromptError
from cheers.image import load_image
from cheers.tokenizer import CheersTokenizer
from cheers.training.recipe import TrainConfig
from parity_fixtures import OFFICIAL

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "cheers" / "default_model"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]


# -- images with several frames ------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "kind"), [(".gif", "GIF"), (".tif", "TIFF"), (".png", "PNG"),
                                              (".webp", "WEBP")])  # fmt: skip
def test_an_animation_or_multi_page_file_is_refused(tmp_path, suffix, kind):
    first, second = _frames()
    path = tmp_path / f"anim{suffix}"
    first.save(path, save_all=True, append_images=[second], duration=100)
    with pytest.raises(ImageError, match=rf"has 2 frames .*multi-page {kind}.*as a PNG"):
        load_image(path)
    # An opened animation passed as a PIL image, too.
    with Image.open(path) as opened, pytest.raises(ImageError, match="has 2 frames"):
        load_image(opened)


def test_a_single_frame_gif_still_loads(tmp_path):
    path = tmp_path / "still.gif"
    Image.new("RGB", (16, 16), RED).save(path)
    assert load_image(path).getpixel((3, 3)) == RED


def test_a_phone_jpeg_with_a_preview_frame_is_its_primary_image(tmp_path):
    # MPO (what phones write) stores previews after the primary picture: frame 0 is the photo.
    first, second = _frames()
    path = tmp_path / "photo.mpo"
    try:
        first.save(path, format="MPO", save_all=True, append_images=[second])
    except (KeyError, OSError, ValueError):
        pytest.skip("this Pillow cannot write MPO")
    with Image.open(path) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    red = np.asarray(load_image(path)).reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[2] < 50  # the first (red) frame, JPEG-rounded


# -- the tokenizer's public methods --------------------------------------------------------------


@pytest.fixture(scope="module")
def tok() -> CheersTokenizer:
    return CheersTokenizer.from_folder(DEFAULT_MODEL)


TOKENIZER_CALLS = {
    "decode str": (lambda t: t.decode("abc"), "sequence of token ids"),
    "decode None": (lambda t: t.decode(None), "sequence of token ids"),
    "decode float": (lambda t: t.decode([2.5]), "2.5, which is not a token id"),
    "decode huge": (lambda t: t.decode([2**70]), "beyond any vocabulary"),
    "decode negative": (lambda t: t.decode([-200]), "negative id -200"),
    "id_to_token str": (lambda t: t.id_to_token("a"), "takes an int id"),
    "token_to_id None": (lambda t: t.token_to_id(None), "takes a str"),
    "encode surrogate": (lambda t: t.encode("a\ud800b"), "lone surrogate"),
    "encode bytes": (lambda t: t.encode(b"abc"), "takes a str"),
    "template None": (lambda t: t.apply_chat_template(None), "messages must be a list"),
}


@pytest.mark.parametrize("name", list(TOKENIZER_CALLS))
def test_tokenizer_methods_refuse_bad_arguments(tok, name):
    call, fragment = TOKENIZER_CALLS[name]
    with pytest.raises(PromptError, match=fragment):
        call(tok)


def test_tokenizer_ids_of_any_integer_type_still_decode(tok):
    ids = tok.encode("hello world")
    text = tok.decode(ids)
    assert tok.decode(torch.tensor(ids)) == text
    assert tok.decode(np.array(ids, dtype=np.int32)) == text
    assert tok.decode([np.int64(i) for i in ids]) == text
    assert tok.id_to_token(np.int64(ids[0])) == tok.id_to_token(ids[0])
    assert tok.decode([len(tok) + 5]) == ""  # the model's padded rows decode to nothing


@pytest.mark.parametrize("bad", [None, "", 3])
def test_tokenizer_folder_arguments(tok, bad):
    with pytest.raises(CheckpointError, match="takes a folder path"):
        CheersTokenizer.from_folder(bad)
    with pytest.raises(CheckpointError, match="takes a folder path"):
        tok.save(bad)


# -- config.json values ------------------------------------------------------------------------


def _released() -> dict:
    return json.loads((OFFICIAL / "config.json").read_text())


CONFIG_VALUES = [
    ("text_config", "rms_norm_eps", float("nan"), "rms_norm_eps must be a number, not NaN"),
    ("text_config", "rope_theta", -1.0, "rope_theta must be > 0"),
    ("text_config", "hidden_act", "relu", "hidden_act 'relu' is not one of"),
    ("vision_representation_config", "hidden_act", "swish", "hidden_act 'swish' is not one of"),
    ("text_config", "rope_scaling", {"type": "yarn", "factor": 4.0}, "plain RoPE only"),
    ("text_config", "tie_word_embeddings", "yes", "must be true or false"),
    ("text_config", "attention_dropout", 1.0, "attention_dropout must be in [0, 1)"),
    ("text_config", "hidden_act", 3, "hidden_act must be a string"),
]


@pytest.mark.parametrize(("section", "key", "value", "fragment"), CONFIG_VALUES)
def test_config_values_the_model_cannot_honour_are_refused(section, key, value, fragment):
    raw = _released()
    assert CheersConfig.from_dict(copy.deepcopy(raw))  # the release itself loads
    raw[section][key] = value
    with pytest.raises(ConfigError) as info:
        CheersConfig.from_dict(raw)
    assert fragment in str(info.value)


def test_config_file_problems(tmp_path):
    binary = tmp_path / "config.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        CheersConfig.from_json(binary)
    with pytest.raises(ConfigError, match=r"must be a str or pathlib\.Path"):
        CheersConfig.from_json(None)


# -- training data files and configs ------------------------------------------------------------

SAMPLE = {"conversations": [{"from": "human", "value": "café?"}, {"from": "gpt", "value": "yes"}]}


def test_a_data_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    line = json.dumps(SAMPLE, ensure_ascii=False) + "\n"
    path.write_bytes(line.encode("utf-8") * 2 + line.encode("latin-1"))  # é is 0xe9 in Latin-1
    with pytest.raises(DataError, match=r"train\.jsonl:3: not UTF-8 text \(byte 0xe9"):
        read_records(path)


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(SAMPLE).encode() + b"\n")
    (record,) = read_records(path)
    assert record.messages == (("user", "café?"), ("assistant", "yes"))


@pytest.mark.parametrize("bad", [None, ""])
def test_data_and_config_paths_must_be_paths(bad):
    with pytest.raises(DataError, match="must be a path"):
        read_records(bad)
    with pytest.raises(ConfigError, match="must be a path to a TOML file"):
        TrainConfig.from_toml(bad)


def test_a_training_config_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; pass the TOML file"):
        TrainConfig.from_toml(tmp_path)
