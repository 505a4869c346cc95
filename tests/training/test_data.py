"""Reading the released JSONL format, tokenisation with labels, and the batch stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cheers.data.examples import IGNORE, apply_guidance_dropout, tokenize
from cheers.data.loader import BatchStream, DataSource, StreamState, TrainingData
from cheers.data.records import read_records
from cheers.errors import DataError
from cheers.sequence import IMAGE_PLACEHOLDER
from cheers.tokenizer import CheersTokenizer
from parity_fixtures import OFFICIAL


@pytest.fixture(scope="module")
def tok() -> CheersTokenizer:
    return CheersTokenizer.from_folder(OFFICIAL)


def _write(tmp_path: Path, lines: list) -> Path:
    Image.new("RGB", (20, 30), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 30), (0, 0, 255)).save(tmp_path / "b.png")
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


UND = {
    "id": "u",
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "<im_start><image><im_end>\nWhat color?"},
        {"from": "gpt", "value": "red"},
    ],
}
GEN = {
    "id": "g",
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "a red thing"},
        {"from": "gpt", "value": "<im_start><image_gen><im_end>"},
    ],
}
EDIT = {
    "id": "e",
    "image": "a.png, b.png",
    "conversations": [
        {"from": "human", "value": "<im_start><image><im_end>\nmake it blue"},
        {"from": "gpt", "value": "<im_start><image_gen><im_end>"},
    ],
}
TEXT = {
    "id": "t",
    "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
}


def test_records_of_every_kind(tmp_path):
    records = read_records(_write(tmp_path, [UND, GEN, EDIT, TEXT]))
    assert [len(r.images) for r in records] == [1, 1, 2, 0]
    assert records[2].images[1] == tmp_path / "b.png"
    assert [r.is_generation for r in records] == [False, True, True, False]
    assert records[0].source.endswith("data.jsonl:1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"conversations": []}, "non-empty list"),
        ({**UND, "image": "missing.png"}, "not found: .*missing.png"),
        ({**UND, "image": None}, "1 <image> and 0 <image_gen> placeholder"),
        (
            {
                **UND,
                "conversations": [
                    {"from": "human", "value": "<image> x"},
                    {"from": "gpt", "value": "y"},
                ],
            },
            "must be written <im_start><image><im_end>",
        ),
        ({**UND, "conversations": [{"from": "human", "value": "q"}]}, "no 'gpt' turn"),
        ({**UND, "conversations": [{"from": "bot", "value": "q"}]}, "turn 0 needs 'from'"),
        (
            {
                **GEN,
                "conversations": [
                    {"from": "human", "value": "<im_start><image_gen><im_end>"},
                    {"from": "gpt", "value": "x"},
                ],
            },
            "belongs in human turns",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, [UND, line])
    with pytest.raises(DataError, match=rf"data\.jsonl:2: .*{message}"):
        read_records(path)
    from cheers.data.records import ReadReport

    report = ReadReport()
    assert len(read_records(path, on_error="skip", report=report)) == 1
    assert report.n_skipped == 1 and "data.jsonl:2" in str(report)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")


def test_labels_follow_the_spec(tmp_path, tok):
    s = tok.special
    und, gen = read_records(_write(tmp_path, [UND, GEN]))
    ex = tokenize(und, tok, tokens_per_image=4, max_length=512)
    # Turn-by-turn tokenisation equals tokenising the whole chat text at once.
    messages = [{"role": "user", "content": UND["conversations"][0]["value"]}]
    whole = tok.apply_chat_template(
        messages, add_generation_prompt=False, tokenize=True, image_placeholders=True
    )
    whole += tok.encode("<|im_start|>assistant\nred<|im_end|>\n", allowed_special="all")
    assert [IMAGE_PLACEHOLDER if i == s.image else i for i in whole] == list(ex.input_ids)
    trained = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert trained == [*tok.encode("red"), s.eos]
    assert ex.sequence_length(4) == len(ex.input_ids) + 3

    g = tokenize(gen, tok, tokens_per_image=4, max_length=512)
    trained = [t for t, lab in zip(g.input_ids, g.labels, strict=True) if lab != IGNORE]
    assert trained == [s.im_start, s.eos]  # <im_start> learned, <im_end> forced, image not text
    assert g.roles == ("gen",)
    dropped = apply_guidance_dropout(g, tok)
    kept = {s.im_start, s.im_end, IMAGE_PLACEHOLDER}
    assert all(i in kept or i == s.no_mean for i in dropped.input_ids)
    assert [
        t for t, lab in zip(dropped.input_ids, dropped.labels, strict=True) if lab != IGNORE
    ] == [s.im_start]


def test_text_only_sample_gets_a_dummy_image(tmp_path, tok):
    (text,) = read_records(_write(tmp_path, [TEXT]))
    ex = tokenize(text, tok, tokens_per_image=4, max_length=512)
    assert ex.input_ids[0] == IMAGE_PLACEHOLDER and ex.roles == ("dummy",)


def test_too_long_sample(tmp_path, tok):
    (und,) = read_records(_write(tmp_path, [UND]))
    with pytest.raises(DataError, match=r"data\.jsonl:1: the sample needs .* max_length is 10"):
        tokenize(und, tok, tokens_per_image=4, max_length=10)
    data = TrainingData([DataSource(str(tmp_path / "data.jsonl"))], tok, 4, 10_000)
    assert len(data) == 1
    with pytest.raises(DataError, match="no usable training samples"):
        TrainingData([DataSource(str(tmp_path / "data.jsonl"))], tok, 4, 10, on_error="skip")


def test_a_stage_can_draw_the_same_examples_with_other_file_weights(tmp_path, tok):
    """A curriculum: stage weights [0, 2] give file b's one example twice and a's never; the
    data itself is shared, untouched."""
    a = _write(tmp_path, [UND, GEN, EDIT, TEXT])
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps(TEXT) + "\n")
    data = TrainingData([DataSource(str(a), 1.0), DataSource(str(b), 1.0)], tok, 4, 4096)
    only_b = data.reweighted([0.0, 2.0])
    assert only_b.epoch_order(seed=0, epoch=0) == [4, 4]
    assert only_b.examples is data.examples and len(data.epoch_order(0, 0)) == 5
    with pytest.raises(DataError, match="1 data weights for 2 data files"):
        data.reweighted([1.0])


def test_mixture_weights_and_resumable_stream(tmp_path, tok):
    a = _write(tmp_path, [UND, GEN, EDIT, TEXT])
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps(TEXT) + "\n")
    data = TrainingData([DataSource(str(a), 1.0), DataSource(str(b), 3.0)], tok, 4, 4096)
    order = data.epoch_order(seed=0, epoch=0)
    assert len(order) == 4 + 3 and order.count(4) == 3
    assert (data.epoch_order(0, 0) == order and data.epoch_order(0, 1) != order) or len(order) < 3

    full = BatchStream(data, batch_size=3, seed=0, group_window=2)
    batches = [full.next() for _ in range(8)]  # four whole windows of 6 positions
    uids = [uid for batch in batches for uid, _ in batch]
    assert sorted(uids) == list(range(24))  # every stream position exactly once
    # Resuming from any saved state continues with exactly the same batches.
    replay = BatchStream(data, batch_size=3, seed=0, group_window=2)
    for k in range(8):
        state = StreamState(replay.state.window_start, replay.state.served)
        resumed = BatchStream(data, batch_size=3, seed=0, group_window=2, state=state)
        assert resumed.next() == replay.next() == batches[k]
    # Within a window, batches are grouped by length.
    lengths = [[data.length(i) for _, i in batch] for batch in batches[:2]]
    assert max(lengths[0]) <= min(lengths[1]) or max(lengths[1]) <= min(lengths[0])


def _one_of_each(tmp_path, tok, first_uid: int):
    """(uid, example) pairs for a question, a caption, an edit and a text-only chat."""
    records = read_records(_write(tmp_path, [UND, GEN, EDIT, TEXT]))
    examples = [tokenize(r, tok, 1, 4096) for r in records]
    return list(zip(range(first_uid, first_uid + 4), examples, strict=True))


def test_split_invariant_sample_randomness(tmp_path, tok):
    from cheers.config import CheersConfig
    from cheers.training.objective import make_batch

    cfg = CheersConfig.tiny(image_size=32)
    items = _one_of_each(tmp_path, tok, 10)
    whole = make_batch(items, tok, cfg, seed=1, guidance_dropout=0.5)
    halves = [make_batch(items[:2], tok, cfg, 1, 0.5), make_batch(items[2:], tok, cfg, 1, 0.5)]
    assert torch.equal(whole.t, torch.cat([h.t for h in halves]))
    assert torch.equal(whole.noise, torch.cat([h.noise for h in halves]))
    assert torch.equal(whole.t[:1], torch.ones(1))  # understanding image at t = 1
    assert whole.t[-1] == 0  # the text-only sample's dummy at t = 0


def test_time_shift_moves_generation_times_through_the_samplers_shift(tmp_path, tok):
    from cheers.config import CheersConfig
    from cheers.training.objective import make_batch
    from cheers.training.randomness import sample_generator

    cfg = CheersConfig.tiny(image_size=32)
    items = _one_of_each(tmp_path, tok, 20)
    uniform = make_batch(items, tok, cfg, seed=3, guidance_dropout=0.0)
    shifted = make_batch(items, tok, cfg, seed=3, guidance_dropout=0.0, time_shift=0.25)
    # Slots: und (t = 1), gen, edit source (und, t = 1), edit target, dummy (t = 0).
    generated = torch.tensor([False, True, False, True, False])
    # The caption (uid 21) draws its dropout, then its t: with α = 1 that uniform draw as is.
    stream = sample_generator(3, 21)
    torch.rand((), generator=stream)
    assert uniform.t[1] == torch.rand((), generator=stream)
    u = uniform.t[generated].double()
    by_hand = 0.25 * u / (1 - 0.75 * u)  # α·u / (1 + (α−1)·u), α = 1/4
    torch.testing.assert_close(shifted.t[generated].double(), by_hand)
    assert bool((shifted.t[generated] < uniform.t[generated]).all())  # nearer noise
    assert torch.equal(shifted.t[~generated], uniform.t[~generated])
    assert torch.equal(shifted.noise, uniform.noise)


def test_time_shift_must_be_positive(tmp_path):
    from cheers.errors import ConfigError
    from cheers.training.recipe import TrainConfig

    raw = {
        "model": {"preset": "tiny", "tokenizer": str(tmp_path)},
        "data": {"files": ["train.jsonl"]},
        "stages": [{"name": "joint", "steps": 1, "time_shift": 0.5}],
    }
    assert TrainConfig.from_dict(raw, base=tmp_path).stages[0].time_shift == 0.5
    raw["stages"][0]["time_shift"] = 0.0
    with pytest.raises(ConfigError, match=r"stages\[0\]\.time_shift = 0(\.0)?: must be > 0"):
        TrainConfig.from_dict(raw, base=tmp_path)
