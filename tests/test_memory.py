"""Memory-aware admission: the estimate's terms against hand counts and real allocations, and
calls that cannot fit refused (API, command line) before anything is allocated."""

from __future__ import annotations

import pytest
import torch

from cheers.cli import main
from cheers.config import CheersConfig
from cheers.loading import default_model_path
from cheers.pipeline import CheersPipeline, memory
from cheers.pipeline.memory import MemoryBudget, MemoryLimitError


@pytest.fixture(scope="module")
def pipe() -> CheersPipeline:
    return CheersPipeline.from_pretrained(default_model_path())


@pytest.fixture
def limited(pipe):
    """``pipe`` with a fixed memory limit for one test (``set(bytes)``), restored after."""
    saved = pipe.memory

    def set_limit(limit: int) -> CheersPipeline:
        pipe.memory = MemoryBudget(limit=limit)
        return pipe

    yield set_limit
    pipe.memory = saved


def test_kv_cache_term_is_the_cache_the_model_allocates(pipe):
    model = pipe.model
    t = model.config.text_config
    # By hand for the embedded model: 4 layers × (K, V) × 3 rows × 10 positions × 2 heads × 32
    # dims × 4 bytes.
    assert (t.num_hidden_layers, t.num_key_value_heads, t.head_dim) == (4, 2, 32)
    assert memory.kv_cache_bytes(model.config, torch.float32, 3, 10) == 4 * 2 * 3 * 10 * 2 * 32 * 4
    cache = model.new_kv_cache(3, 10)
    allocated = sum(x.numel() * x.element_size() for x in [*cache.keys, *cache.values])
    assert allocated == memory.kv_cache_bytes(model.config, torch.float32, 3, 10)


def test_decoder_and_layer_terms_by_hand():
    config = CheersConfig.official()  # decoder: 128 channels × (1, 2, 4, 4) at 512 px
    # Largest level: the full-resolution one, 256 channels coming in from level 1, six maps,
    # two bytes, 5 images (the middle attention over 64² positions is smaller: 2 × 4096²).
    assert memory.decoder_bytes(config, torch.bfloat16, 5) == 5 * 6 * 256 * 512 * 512 * 2
    tiny = CheersConfig.tiny(image_size=64)  # 32 channels × (1, 1, 1, 1): 8² positions
    assert memory.decoder_bytes(tiny, torch.float32, 1) == 6 * 32 * 64 * 64 * 4
    t = config.text_config  # 1536 wide, MLP 8960, 12 heads
    # Two rows of 7 new positions attending to 9: (4·1536 + 3·8960)·7 + 12·7·9, float32.
    expected = 2 * ((4 * 1536 + 3 * 8960) * 7 + 12 * 7 * 9) * 4
    assert memory.language_layer_bytes(config, torch.float32, 2, 7, 9) == expected
    assert t.hidden_size == 1536


def test_image_estimate_grows_with_images_guidance_and_dtype():
    config = CheersConfig.official()

    def need(images: int, guided: bool = True, dtype=torch.bfloat16) -> int:
        return memory.image_call(config, dtype, images, guided=guided, prompt_tokens=64).total

    assert need(8) > need(4) > need(1) > 0
    assert need(4, guided=False) < need(4)
    assert need(4, dtype=torch.float32) == pytest.approx(2 * need(4), rel=0.01)


def test_rows_that_fit_is_the_largest_count_under_the_limit():
    config = CheersConfig.official()

    def estimate(n: int) -> memory.MemoryEstimate:
        return memory.image_call(config, torch.bfloat16, n, guided=True, prompt_tokens=64)

    limit = estimate(5).total + 1
    budget = MemoryBudget(limit=limit)
    assert budget.rows_that_fit(estimate, 16, "cpu") == 5
    assert budget.rows_that_fit(estimate, 3, "cpu") == 3
    assert MemoryBudget(limit=10).rows_that_fit(estimate, 4, "cpu") == 0
    # With no known limit (a device that cannot say), nothing is refused.
    assert MemoryBudget(free=lambda device: None).rows_that_fit(estimate, 16, "cpu") == 16


def test_a_bad_limit_is_refused():
    with pytest.raises(memory.CheersError, match="positive number of bytes"):
        MemoryBudget(limit=0)


def test_images_that_cannot_fit_are_refused_with_the_limit_and_the_fix(pipe, limited):
    config, dtype = pipe.model.config, pipe.model.dtype
    prompt_tokens = len(pipe.inputs.generation_ids("a red circle"))
    two = memory.image_call(config, dtype, 2, guided=True, prompt_tokens=prompt_tokens).total
    limited(two)
    assert len(pipe(["a red circle"] * 2, num_inference_steps=2).images) == 2
    with pytest.raises(MemoryLimitError) as err:
        pipe(["a red circle"] * 2, num_images_per_prompt=2, num_inference_steps=2)
    message = str(err.value)
    assert "4 image(s) of 64x64 with guidance" in message
    assert "the memory limit is" in message and "at most 2 image(s) per call" in message
    limited(1000)
    with pytest.raises(MemoryLimitError, match="not even one image fits"):
        pipe.edit(_blank(), "make it blue", num_inference_steps=4)


def _blank():
    from PIL import Image

    return Image.new("RGB", (64, 64), "white")


def test_conversations_that_cannot_fit_are_refused(pipe, limited):
    messages = [{"role": "user", "content": "Hello"}]
    answer = pipe.chat(messages, max_new_tokens=4)
    limited(1000)
    with pytest.raises(MemoryLimitError, match=r"1 conversation\(s\).*not even one fits"):
        pipe.chat(messages, max_new_tokens=4)
    limited(10**9)
    assert pipe.chat(messages, max_new_tokens=4) == answer


def test_the_command_line_refuses_with_the_free_memory(monkeypatch, capsys, tmp_path):
    # What the machine has free is read when the call comes: a machine with 1 MiB left.
    monkeypatch.setattr(memory, "_mem_available", lambda: 2**20)
    code = main(["generate", "a red circle", "--num-images", "8", "--steps", "2", "--seed", "0",
                 "--out", str(tmp_path), "--no-progress"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "error: 8 image(s) of 64x64 with guidance need about" in err
    assert "free memory on cpu is 1.0 MiB" in err
    assert list(tmp_path.iterdir()) == []
