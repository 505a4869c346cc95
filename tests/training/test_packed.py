"""cheers.training.packed: the batched objective equals the per-sample one, and its layout."""

import numpy as np
import torch

from cheers.checkpoint import load_model
from cheers.data.examples import IGNORE, UNDERSTANDING, Example, tokenize
from cheers.data.records import Record
from cheers.pipeline import CheersPipeline
from cheers.sequence import IMAGE_PLACEHOLDER
from cheers.shapes.dataset import make_sample, stream
from cheers.shapes.render import render_array
from cheers.tokenizer import CheersTokenizer
from cheers.training.objective import Objective, TrainBatch
from cheers.training.packed import (
    collate,
    draw_t,
    pack_example,
    packed_losses,
    rows_right,
    to_device,
)

PACKAGE_MODEL = "src/cheers/default_model"


def _examples(tasks, tokenizer, p, seed=0):
    rng = stream(seed, "val")
    out = []
    for k, task in enumerate(tasks):
        s = make_sample(rng, task, f"t{k}")
        record = Record(
            s.id,
            tuple(f"{j}.png" for j in range(len(s.scenes))),
            (("user", s.human), ("assistant", s.gpt)),
            s.id,
        )
        out.append((tokenize(record, tokenizer, p, 512), s))
    return out


def test_collate_lays_out_slots_targets_and_padding_by_hand():
    # ids 5 <image> 7 with P = 2; only 7 is learned.
    a = Example((5, IMAGE_PLACEHOLDER, 7), (IGNORE, IGNORE, 7), (UNDERSTANDING,), ("x",), "a")
    b = Example((9, 8), (IGNORE, 8), (), (), "b")
    rows = [pack_example(a, 2), pack_example(b, 2)]
    image = np.zeros((4, 4, 3), np.uint8)
    batch = collate(rows, [image])
    assert batch["ids"].tolist() == [[5, 0, 0, 7], [0, 0, 9, 8]]
    assert batch["block"].tolist() == [[-1, 0, 0, -1], [-1, -1, -1, -1]]
    assert batch["valid"].tolist() == [[True] * 4, [False, False, True, True]]
    # Position i holds the label of position i + 1.
    assert batch["target"].tolist() == [[IGNORE, IGNORE, 7, IGNORE], [IGNORE, IGNORE, 8, IGNORE]]
    assert batch["noised"].tolist() == [False]


def test_draw_t_is_one_for_read_images_and_shifted_for_targets():
    noised = torch.tensor([True, False, True, True])
    g = torch.Generator().manual_seed(3)
    t = draw_t(noised, 0.3, torch.Generator().manual_seed(3))
    u = torch.rand(4, generator=g).clamp(1e-6, 1 - 1e-6)
    expected = 0.3 * u / (1 + (0.3 - 1) * u)
    assert t[1] == 1.0
    torch.testing.assert_close(t[noised], expected[noised])


def test_packed_losses_equal_the_per_sample_objective():
    model = load_model(PACKAGE_MODEL)
    tokenizer = CheersTokenizer.from_folder(PACKAGE_MODEL)
    p = model.tokens_per_image
    tasks = ["understanding", "generation", "editing", "generation", "understanding"]
    pairs = _examples(tasks, tokenizer, p)
    examples = [e for e, _ in pairs]
    arrays = [render_array(scene) for _, s in pairs for scene in s.scenes]
    pixels = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    g = torch.Generator().manual_seed(0)
    noised = torch.tensor([r == "gen" for e in examples for r in e.roles])
    t = draw_t(noised, 1.0, g)
    x0 = torch.randn(len(t), model.config.latent_channels, model.grid_size, model.grid_size)
    with torch.no_grad():
        reference = Objective(model)(TrainBatch(examples, pixels, t, x0, []))
        batch = to_device(collate([pack_example(e, p) for e in examples], arrays), model.device)
        packed = packed_losses(model, batch, t, x0)
    assert int(packed["text_n"]) == reference.text_count
    assert int(packed["image_n"]) == reference.image_count
    torch.testing.assert_close(packed["text"], reference.text, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(packed["image"], reference.image, rtol=1e-4, atol=1e-4)


def test_rows_right_is_exactly_whether_greedy_decoding_answers_right():
    pipe = CheersPipeline.from_pretrained(PACKAGE_MODEL)
    model, tokenizer = pipe.model, pipe.tokenizer
    pairs = _examples(["understanding"] * 16, tokenizer, model.tokens_per_image, seed=4)
    arrays = [render_array(s.scenes[0]) for _, s in pairs]
    batch = collate([pack_example(e, model.tokens_per_image) for e, _ in pairs], arrays)
    with torch.no_grad():
        b = to_device(batch, model.device)
        x0 = torch.zeros(16, model.config.latent_channels, model.grid_size, model.grid_size)
        right = rows_right(packed_losses(model, b, torch.ones(16), x0, heads=False))
    questions = [s.human.split("\n", 1)[1] for _, s in pairs]
    images = [[a] for a in arrays]
    answers = pipe.understand(images, questions, max_new_tokens=8)
    greedy_right = [a == s.gpt for a, (_, s) in zip(answers, pairs, strict=True)]
    assert right.tolist() == greedy_right
    assert 0 < sum(greedy_right) < 16  # both outcomes occur, so the comparison means something
