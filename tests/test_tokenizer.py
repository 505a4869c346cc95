"""Tests of cheers.tokenizer against the released tokenizer files and the parity fixtures."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, models

from cheers.errors import CheckpointError, PromptError
from cheers.tokenizer import IMAGE_SLOT_TEXT, QWEN2_CHAT_TEMPLATE, CheersTokenizer, SpecialTokens
from parity_fixtures import OFFICIAL, fixture_dirs, fixture_ids

REPO = Path(__file__).resolve().parents[1]

# Covers Latin with accents, CJK, Arabic, emoji with a skin-tone modifier, digits (Qwen2 splits
# them one by one), code, tabs, CRLF and runs of spaces: the regex's every branch.
MULTILINGUAL = (
    "Hello world! Ça va? naïve café — 日本語のテキスト、中文句子。 한국어 문장 "
    "مرحبا بالعالم Привет, мир! 12345 3.14159 🎉👍🏽 \n\n  tabs\there\r\n"
    "def f(x):\n    return x**2  # it's, we're, I'LL\n<|im_start|><image>"
)

FIXTURE_DIRS = fixture_dirs()
fixture_params = pytest.mark.parametrize(
    "fixture_dir",
    FIXTURE_DIRS or [pytest.param(None, marks=pytest.mark.skip(reason="no parity fixtures"))],
    ids=fixture_ids(FIXTURE_DIRS) or ["none"],
)


@pytest.fixture(scope="module")
def tok() -> CheersTokenizer:
    return CheersTokenizer.from_folder(OFFICIAL)


@pytest.fixture(scope="module")
def saved(tok: CheersTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved_tokenizer")
    tok.save(folder)
    return folder


def _tokenizer_for(fixture_dir: Path, official: CheersTokenizer) -> CheersTokenizer:
    has_own = (fixture_dir / "tokenizer.json").is_file() or (fixture_dir / "vocab.json").is_file()
    return CheersTokenizer.from_folder(fixture_dir) if has_own else official


def _copy_bpe_files(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(OFFICIAL / name, dst / name)
    return dst


def _official_config() -> dict:
    return json.loads((OFFICIAL / "tokenizer_config.json").read_text(encoding="utf-8"))


# -- the fixtures -----------------------------------------------------------------------------


@fixture_params
def test_fixture_understanding_prompt(fixture_dir: Path, tok: CheersTokenizer) -> None:
    ref = json.loads((fixture_dir / "reference.json").read_text(encoding="utf-8"))
    t = _tokenizer_for(fixture_dir, tok)
    und = ref["und"]
    assert t.apply_chat_template(und["messages"]) == und["chat_text"]
    placeholder = ref["special_ids"]["IMAGE_TOKEN_INDEX"]
    ids = t.apply_chat_template(und["messages"], tokenize=True, image_placeholders=True)
    ids = [placeholder if i == t.special.image else i for i in ids]
    assert ids == und["input_ids"]


@fixture_params
def test_fixture_generation_prompt(fixture_dir: Path, tok: CheersTokenizer) -> None:
    ref = json.loads((fixture_dir / "reference.json").read_text(encoding="utf-8"))
    t = _tokenizer_for(fixture_dir, tok)
    gen = ref["gen"]
    assert t.apply_chat_template(gen["messages"]) == gen["chat_text"]
    ids = t.apply_chat_template(gen["messages"], tokenize=True)
    assert [*ids, t.special.im_start] == gen["input_ids"]
    # The rendered text, encoded as trusted template text, gives the same ids.
    assert t.encode(gen["chat_text"], allowed_special="all") == ids


@fixture_params
def test_fixture_special_ids_and_answer_text(fixture_dir: Path, tok: CheersTokenizer) -> None:
    ref = json.loads((fixture_dir / "reference.json").read_text(encoding="utf-8"))
    t = _tokenizer_for(fixture_dir, tok)
    special = ref["special_ids"]
    assert t.special.im_start == special["IM_START_ID"]
    assert t.special.im_end == special["IM_END_ID"]
    assert t.special.no_mean == special["NO_MEAN_ID"]
    assert t.special.eos == special["EOS_TOKEN_ID"]
    assert t.special.pad == special["pad"]
    # The reference decodes with skip_special_tokens=True; the answer keeps <tool_call>,
    # a non-special added token, which is what pins those semantics down.
    assert t.decode(ref["i2t_output_ids"]) == ref["i2t_text"]


# -- ids and special tokens -------------------------------------------------------------------


def test_special_ids_are_the_released_ones(tok: CheersTokenizer) -> None:
    assert tok.special == SpecialTokens()
    assert dataclasses.astuple(tok.special) == (
        151644,
        151645,
        151643,
        151665,
        151666,
        151667,
        151668,
        151669,
    )
    assert len(tok) == 151670
    for token, token_id in [
        ("<|endoftext|>", 151643),
        ("<|im_start|>", 151644),
        ("<|im_end|>", 151645),
        ("<|file_sep|>", 151664),
        ("<image>", 151665),
        ("<image_gen>", 151666),
        ("<im_start>", 151667),
        ("<im_end>", 151668),
        ("<no_mean>", 151669),
    ]:
        assert tok.token_to_id(token) == token_id
        assert tok.id_to_token(token_id) == token
    assert tok.token_to_id("<not a token>") is None
    assert tok.id_to_token(-200) is None
    assert tok.id_to_token(10**7) is None


def test_special_tokens_is_frozen(tok: CheersTokenizer) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tok.special.eos = 0  # type: ignore[misc]


def test_encode_known_ids(tok: CheersTokenizer) -> None:
    assert tok.encode("Hello world") == [9707, 1879]
    # Qwen2's regex gives every digit its own piece and leaves the space before them alone.
    assert tok.encode(" 12345") == [220, 16, 17, 18, 19, 20]
    assert tok.encode("") == []
    assert tok.id_to_token(1879) == "Ġworld"  # byte-level form of " world"


def test_added_tokens_in_text_are_single_ids(tok: CheersTokenizer) -> None:
    every = "all"
    assert tok.encode("<im_start><image><im_end>", every) == [151667, 151665, 151668]
    assert tok.encode("<|im_start|>user\n", every) == [151644, 872, 198]
    assert tok.encode("<image_gen><no_mean><|endoftext|>", every) == [151666, 151669, 151643]
    # A partial token is ordinary text.
    assert 151665 not in tok.encode("<imag")


def test_no_bos_or_eos_added(tok: CheersTokenizer) -> None:
    ids = tok.encode("A red cube.")
    assert tok.special.pad not in ids
    assert tok.special.eos not in ids


def test_decode_skip_special_semantics(tok: CheersTokenizer) -> None:
    ids = [151644, 151667, 9707, 151668, 151657, 1879, 151645]
    assert tok.decode(ids) == "Hello<tool_call> world"
    assert (
        tok.decode(ids, skip_special_tokens=False)
        == "<|im_start|><im_start>Hello<im_end><tool_call> world<|im_end|>"
    )


def test_decode_accepts_tensors_and_padded_vocab_ids(tok: CheersTokenizer) -> None:
    assert tok.decode(torch.tensor([9707, 1879])) == "Hello world"
    # Ids past the tokenizer but inside the model's padded embedding table decode to nothing,
    # as in the Hugging Face tokenizer.
    assert tok.decode([9707, 151900]) == "Hello"


def test_decode_rejects_placeholders_and_batches(tok: CheersTokenizer) -> None:
    with pytest.raises(PromptError, match="negative id -200"):
        tok.decode([9707, -200])
    with pytest.raises(PromptError, match="batch"):
        tok.decode(torch.tensor([[9707], [1879]]))


def test_round_trip_text(tok: CheersTokenizer) -> None:
    ids = tok.encode(MULTILINGUAL, allowed_special="all")
    assert tok.decode(ids, skip_special_tokens=False) == MULTILINGUAL
    assert tok.decode(ids) == MULTILINGUAL.replace("<|im_start|><image>", "")


def test_nfc_normalisation(tok: CheersTokenizer) -> None:
    decomposed = "cafe\u0301"  # 'e' + combining acute accent
    assert tok.encode(decomposed) == tok.encode("caf\u00e9")


def test_encode_rejects_non_text(tok: CheersTokenizer) -> None:
    with pytest.raises(PromptError, match="takes a str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]


# -- chat template ----------------------------------------------------------------------------


def test_chat_template_default_system(tok: CheersTokenizer) -> None:
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_template_explicit_system_multi_turn(tok: CheersTokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    assert tok.apply_chat_template(messages, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    )


def test_chat_template_system_later_does_not_suppress_default(tok: CheersTokenizer) -> None:
    # The released Jinja template only looks at the first message.
    text = tok.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
        add_generation_prompt=False,
    )
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>system\nb<|im_end|>\n")


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([{"role": "tool", "content": "x"}], "role 'tool'"),
        ([{"role": "user", "content": 3}], "not a str"),
        ([{"content": "x"}], "not a dict with 'role' and 'content'"),
        (["hello"], "not a dict with 'role' and 'content'"),
        ([], "messages is empty"),
        ("hello", "must be a list"),
    ],
)
def test_chat_template_errors(tok: CheersTokenizer, messages: object, needle: str) -> None:
    with pytest.raises(PromptError, match=needle) as info:
        tok.apply_chat_template(messages)  # type: ignore[arg-type]
    # Every message also tells how to fix it.
    assert any(word in str(info.value) for word in ("Use", "Pass", "Wrap", "Write"))


# -- save / load ------------------------------------------------------------------------------


def test_save_writes_hf_style_folder(saved: Path, tok: CheersTokenizer) -> None:
    for name in ("vocab.json", "merges.txt"):
        assert (saved / name).read_bytes() == (OFFICIAL / name).read_bytes(), name
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    official = _official_config()
    assert config["chat_template"] == official["chat_template"] == QWEN2_CHAT_TEMPLATE
    assert config["eos_token"] == "<|im_end|>"
    assert config["pad_token"] == "<|endoftext|>"
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    decoder = config["added_tokens_decoder"]
    for key, entry in official["added_tokens_decoder"].items():
        assert decoder[key] == entry
    for token, token_id in [("<image>", 151665), ("<no_mean>", 151669)]:
        assert decoder[str(token_id)]["content"] == token
        assert decoder[str(token_id)]["special"] is True
    state = json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))
    assert state["normalizer"] == {"type": "NFC"}
    assert state["pre_tokenizer"]["pretokenizers"][0]["type"] == "Split"
    assert state["decoder"]["type"] == "ByteLevel"
    assert [t["id"] for t in state["added_tokens"]] == list(range(151643, 151670))


def test_save_load_round_trip_both_paths(saved: Path, tok: CheersTokenizer, tmp_path: Path) -> None:
    from_json = CheersTokenizer.from_folder(saved)
    bpe_only = tmp_path / "bpe"
    bpe_only.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(saved / name, bpe_only / name)
    from_bpe = CheersTokenizer.from_folder(bpe_only)
    for allowed in ("all", ()):
        expected = tok.encode(MULTILINGUAL, allowed)
        assert from_json.encode(MULTILINGUAL, allowed) == expected
        assert from_bpe.encode(MULTILINGUAL, allowed) == expected
    assert from_json.special == from_bpe.special == tok.special
    assert len(from_json) == len(from_bpe) == len(tok)
    assert from_json.decode(expected) == from_bpe.decode(expected) == tok.decode(expected)


def test_tokenizer_json_without_cheers_tokens_gets_them(
    tok: CheersTokenizer, tmp_path: Path
) -> None:
    # Rebuild the Qwen2-only tokenizer.json a released folder could carry (no Cheers tokens).
    state = json.loads(tok.backend.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["id"] < 151665]
    (tmp_path / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    loaded = CheersTokenizer.from_folder(tmp_path)
    assert loaded.special == SpecialTokens()
    assert loaded.encode("<im_start><image><im_end>", "all") == [151667, 151665, 151668]


# -- load errors ------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as info:
        CheersTokenizer.from_folder(tmp_path / "nope")
    assert "tokenizer.json" in str(info.value)


def test_empty_folder_names_accepted_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        CheersTokenizer.from_folder(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert name in message


def test_bpe_files_without_config(tmp_path: Path) -> None:
    _copy_bpe_files(tmp_path)
    with pytest.raises(CheckpointError, match=r"lacks tokenizer_config\.json"):
        CheersTokenizer.from_folder(tmp_path)


def test_corrupt_tokenizer_json(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="Cannot parse"):
        CheersTokenizer.from_folder(tmp_path)


def test_corrupt_tokenizer_config(tmp_path: Path) -> None:
    _copy_bpe_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(CheckpointError, match="Cannot read"):
        CheersTokenizer.from_folder(tmp_path)


def test_config_id_gap(tmp_path: Path) -> None:
    _copy_bpe_files(tmp_path)
    config = _official_config()
    config["added_tokens_decoder"].pop("151650")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match="lands at id 151650"):
        CheersTokenizer.from_folder(tmp_path)


def test_extra_token_blocks_cheers_ids(tmp_path: Path) -> None:
    _copy_bpe_files(tmp_path)
    config = _official_config()
    config["added_tokens_decoder"]["151665"] = {"content": "<extra>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match="Cannot add '<image>' at id 151665"):
        CheersTokenizer.from_folder(tmp_path)


def test_swapped_cheers_ids_conflict(tmp_path: Path) -> None:
    _copy_bpe_files(tmp_path)
    config = _official_config()
    config["added_tokens_decoder"]["151665"] = {"content": "<image_gen>", "special": True}
    config["added_tokens_decoder"]["151666"] = {"content": "<image>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"'<image>' has id 151666.*uses id 151665"):
        CheersTokenizer.from_folder(tmp_path)


def test_small_tokenizer_json_conflicts(tmp_path: Path) -> None:
    small = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    (tmp_path / "plain").mkdir()
    small.save(str(tmp_path / "plain" / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="has 2 ids"):
        CheersTokenizer.from_folder(tmp_path / "plain")
    small.add_special_tokens([AddedToken("<image>", normalized=False, special=True)])
    (tmp_path / "clash").mkdir()
    small.save(str(tmp_path / "clash" / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="'<image>' has id 2"):
        CheersTokenizer.from_folder(tmp_path / "clash")


def test_compact_vocabulary_with_all_cheers_tokens_keeps_its_ids(tmp_path: Path) -> None:
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<image_gen>"]
    tokens += ["<im_start>", "<im_end>", "<no_mean>"]
    small = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    small.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in tokens])
    (tmp_path / "compact").mkdir()
    small.save(str(tmp_path / "compact" / "tokenizer.json"))
    tok = CheersTokenizer.from_folder(tmp_path / "compact")
    assert (tok.special.pad, tok.special.image, tok.special.no_mean) == (2, 5, 9)
    assert tok.encode("<im_start><image><im_end>", [IMAGE_SLOT_TEXT]) == [7, 5, 8]
