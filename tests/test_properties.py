"""Property tests: any input to the training-config parser and the tokenizer gives a correct
result or a CheersError, never another exception."""

from __future__ import annotations

import copy
import math
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cheers.errors import CheersError, ConfigError
from cheers.tokenizer import IMAGE_SLOT_TEXT, CheersTokenizer
from cheers.training.recipe import MODULE_GROUPS, TrainConfig

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "cheers" / "default_model"
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

BASE = {
    "model": {"preset": "tiny", "tokenizer": "tok"},
    "data": {"files": ["train.jsonl"]},
    "stages": [{"name": "align", "steps": 3}],
    "run": {},
}
KEYS = {
    "model": ["from_pretrained", "preset", "config", "tokenizer", "vae", "tokeniser"],
    "data": ["max_length", "bad_samples", "group_window", "files", "maxlength"],
    "stages": [
        "name",
        "steps",
        "trainable",
        "kind",
        "lr",
        "min_lr_ratio",
        "schedule",
        "warmup",
        "batch_size",
        "grad_accum",
        "clip",
        "weight_decay",
        "betas",
        "guidance_dropout",
        "time_shift",
        "kl_weight",
        "stpes",
    ],
    "run": [
        "output_dir",
        "seed",
        "save_every",
        "log_every",
        "keep_last",
        "gradient_checkpointing",
        "device",
        "strategy",
        "progress",
    ],
}
# What TOML can hold (no null), plus the near-misses that matter: huge ints, nan, inf, -0.0.
SCALARS = (
    st.integers()
    | st.integers(min_value=2**62, max_value=2**100)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=12)
    | st.sampled_from(["all", "new", "vae", "cosine", "skip", "fsdp", "cpu", "cuda:0", "tiny"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


FRACTION = st.floats(min_value=0, max_value=1, exclude_max=True)
# Values that are valid for a field, so that accepted configs are generated often too.
VALID = {
    "steps": st.integers(1, 10**6),
    "lr": st.floats(min_value=1e-9, max_value=10),
    "betas": st.lists(FRACTION, min_size=2, max_size=2),
    "warmup": FRACTION,
    "guidance_dropout": FRACTION,
    "time_shift": st.floats(min_value=1e-3, max_value=10),
    "batch_size": st.sampled_from([1, 2, 4, 8]),
    "grad_accum": st.sampled_from([1, 2]),
    "trainable": st.sampled_from(["all", "new", ["vae", "vision"]]),
    "seed": st.integers(0, 2**32 - 1),
    "max_length": st.integers(1, 10**5),
    "files": st.lists(
        st.fixed_dictionaries({"path": st.just("a.jsonl"), "weight": st.floats(0, 5)}),
        min_size=1,
        max_size=2,
    ),
}


def _edit(section: str) -> st.SearchStrategy:
    def value(key: str) -> st.SearchStrategy:
        return VALID[key] | VALUES if key in VALID else VALUES

    keys = st.sampled_from(KEYS[section])
    return keys.flatmap(lambda key: st.tuples(st.just(section), st.just(key), value(key)))


@SETTINGS
@given(edits=st.lists(st.sampled_from(sorted(KEYS)).flatmap(_edit), min_size=1, max_size=4))
def test_training_config_gives_a_valid_config_or_a_config_error(tmp_path, edits):
    raw = copy.deepcopy(BASE)
    for section, key, value in edits:
        (raw["stages"][0] if section == "stages" else raw[section])[key] = value
    try:
        config = TrainConfig.from_dict(raw, base=tmp_path)
    except ConfigError as err:
        assert str(err)  # a message, naming something
        return
    # Accepted: every field has its type and range.
    for stage in config.stages:
        assert type(stage.steps) is int and stage.steps >= 1
        assert type(stage.lr) is float and math.isfinite(stage.lr) and stage.lr > 0
        assert len(stage.betas) == 2 and all(0 <= b < 1 for b in stage.betas)
        assert 0 <= stage.warmup < 1 and 0 <= stage.guidance_dropout <= 1
        assert stage.time_shift > 0 and math.isfinite(stage.time_shift)
        assert set(stage.trainable_groups()) <= set(MODULE_GROUPS)
        assert stage.batch_size % stage.grad_accum == 0
    assert type(config.run.seed) is int and 0 <= config.run.seed < 2**32
    assert type(config.data.max_length) is int and config.data.max_length >= 1
    assert config.data.bad_samples in ("fail", "skip")
    assert all(f.weight >= 0 and math.isfinite(f.weight) for f in config.data.files)


@SETTINGS
@given(raw=st.dictionaries(st.text(max_size=8), VALUES, max_size=4) | VALUES)
def test_any_document_gives_a_config_error_not_a_crash(tmp_path, raw):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(raw, base=tmp_path)  # no [[stages]] or model: never valid


@pytest.fixture(scope="module")
def tok() -> CheersTokenizer:
    return CheersTokenizer.from_folder(DEFAULT_MODEL)


SPECIAL_TEXT = st.sampled_from(
    [
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<image>",
        "<image_gen>",
        "<im_start>",
        "<im_end>",
        "<no_mean>",
        IMAGE_SLOT_TEXT,
        "\n",
        "assistant",
        "<",
        "|>",
    ]
)
TEXT = st.lists(st.text(max_size=8) | SPECIAL_TEXT, max_size=8).map("".join)


@SETTINGS
@given(text=TEXT)
def test_encode_is_lossless_and_never_makes_special_ids(tok, text):
    ids = tok.encode(text)
    specials = set(vars(tok.special).values())
    assert not specials & set(ids)
    assert tok.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", text)


@SETTINGS
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "user", "assistant"]) | VALUES, "content": TEXT}
        )
        | VALUES,
        max_size=4,
    ),
    placeholders=st.booleans(),
)
def test_chat_template_gives_ids_or_a_prompt_error(tok, messages, placeholders):
    try:
        ids = tok.apply_chat_template(messages, tokenize=True, image_placeholders=placeholders)
    except CheersError:
        return
    # One <|im_start|> per turn (+ the default system turn if needed, + the generation prompt).
    turns = len(messages) + (messages[0]["role"] != "system")
    assert ids.count(tok.special.im_start_chat) == turns + 1
    assert ids.count(tok.special.eos) == turns
    slots = sum(m["content"].count(IMAGE_SLOT_TEXT) for m in messages) if placeholders else 0
    assert ids.count(tok.special.image) == slots
