"""Int8 as a load option: bad names refused, and the product CUDA runs (the dequantized
weight in the activations' dtype) works off the CPU, shown on the ``meta`` device."""

from __future__ import annotations

import pytest
import torch

from cheers.checkpoint import load_model
from cheers.errors import CheckpointError
from cheers.transforms.quantize import Int8Linear

MODEL = "src/cheers/default_model"


def test_an_unknown_quantization_is_refused():
    with pytest.raises(CheckpointError, match=r"unknown quantization 'int4'.*int8"):
        load_model(MODEL, quantize="int4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_off_the_cpu_every_product_uses_the_dequantized_weight(dtype):
    linear = torch.nn.Linear(24, 16)
    cpu = Int8Linear(linear)
    x = torch.randn(1, 24)
    # On the CPU one row goes through torch's int8 kernel; elsewhere (CUDA) through the
    # dequantized weight. Both give the same numbers on the CPU ...
    expected = torch.nn.functional.linear(x, cpu.dequantized(), linear.bias)
    torch.testing.assert_close(cpu(x), expected, rtol=1e-5, atol=1e-5)
    # ... and the non-CPU branch keeps the activations' dtype and shape (meta: no data).
    with torch.device("meta"):
        off = Int8Linear(torch.nn.Linear(24, 16))
    out = off(torch.empty(1, 3, 24, device="meta", dtype=dtype))
    assert out.shape == (1, 3, 16) and out.dtype == dtype and out.is_meta


def test_int8_load_in_bfloat16_keeps_bfloat16_compute():
    model = load_model(MODEL, dtype="bfloat16", quantize="int8")
    layer = model.get_submodule("model.language_model.layers.0.mlp.up_proj")
    assert isinstance(layer, Int8Linear) and layer.weight.dtype == torch.int8
    assert model.dtype == torch.bfloat16
    assert model.model.language_model.embed_tokens.weight.dtype == torch.bfloat16


def test_the_cli_loads_int8_and_refuses_offload_on_the_cpu(capsys, tmp_path):
    from PIL import Image

    from cheers.cli import main
    from cheers.pipeline import CheersPipeline

    image = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    flags = ["--model", MODEL, "--device", "cpu", "--max-new-tokens", "4"]
    assert main(["ask", str(image), "--question", "What color?", "--quantize", "int8", *flags]) == 0
    int8 = CheersPipeline.from_pretrained(MODEL, quantize="int8")
    expected = int8.understand(str(image), "What color?", max_new_tokens=4)
    assert capsys.readouterr().out == expected + "\n"
    assert main(["ask", str(image), "--question", "What color?", "--offload", *flags]) == 2
    assert "--offload" in capsys.readouterr().err
