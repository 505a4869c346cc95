"""2-/4-bit weights: packing, RTN, decoupleQ's two steps against independent solutions, the
model transform, the quantized folder (reload, mismatches) and ``cheers quantize``'s errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cheers.cli import main
from cheers.errors import CheckpointError, CheersError, DataError
from cheers.pipeline import CheersPipeline
from cheers.quantization import (
    QuantizeSettings,
    calibration_batches,
    quantize_folder,
    quantize_model,
)
from cheers.sequence import left_pad, omni_mask
from cheers.shapes.dataset import write_split
from cheers.transforms.decoupleq import (
    decoupleq_layer,
    output_error,
    solve_floats,
    solve_integers,
)
from cheers.transforms.lowbit import (
    LowBitLinear,
    LowBitSpec,
    dequantize,
    pack,
    rtn,
    unpack,
)

MODEL = "src/cheers/default_model"


def correlated_inputs(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """Activations with very unequal, correlated channels (as real ones are)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=g) * torch.logspace(0, -2, width)
    return torch.randn(n, width, generator=g) @ mix.T + torch.randn(width, generator=g)


# ------------------------------------------------------------------------- packing and RTN
def test_packing_is_hand_checkable_and_round_trips():
    q = torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8)
    assert pack(q, 2).tolist() == [[1 + (2 << 2) + (3 << 4)]]  # first value in the low bits
    assert pack(torch.tensor([[5, 12]]), 4).tolist() == [[5 + (12 << 4)]]
    for bits in (2, 4):
        values = torch.randint(0, 2**bits, (7, 64), dtype=torch.uint8)
        packed = pack(values, bits)
        assert packed.shape == (7, 64 * bits // 8) and packed.dtype == torch.uint8
        assert torch.equal(unpack(packed, bits), values)


@pytest.mark.parametrize(("bits", "group"), [(2, 64), (4, 32), (4, 0)])
def test_rtn_puts_every_weight_within_half_a_step(bits, group):
    w = torch.randn(16, 128)
    spec = LowBitSpec(bits, group)
    q, scales, zeros = rtn(w, spec)
    assert int(q.max()) <= 2**bits - 1
    g = spec.group(128)
    step = scales.repeat_interleave(g, dim=1)
    assert ((w - dequantize(q, scales, zeros)).abs() <= step / 2 + 1e-6).all()


@pytest.mark.parametrize(
    ("bits", "group", "outputs", "kernel"),
    [
        (4, 64, 48, True),
        (4, 32, 32, True),
        (4, 64, 40, False),
        (2, 64, 48, False),
        (4, 0, 48, True),  # one group of 128 inputs a row
    ],
)
def test_lowbit_linear_computes_the_dequantized_product(bits, group, outputs, kernel):
    """4 bits with a group size and output width torch's int4 CPU kernel takes runs in it;
    the rest multiply by the dequantized weight."""
    linear = torch.nn.Linear(128, outputs)
    spec = LowBitSpec(bits, group)
    layer = LowBitLinear.from_parts(linear, spec, *rtn(linear.weight, spec))
    with torch.no_grad():
        for rows in (12, 6):  # a prompt (dequantized), a decoding step (the kernel if any)
            x = torch.randn(2, rows // 2, 128)
            expected = torch.nn.functional.linear(x, layer.dequantized(), linear.bias)
            torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)
            assert (layer._int4 is not None) == (kernel and rows <= 8)
        # Scales and zeros are float16: 2 bytes each per group.
        assert layer.scales.dtype == torch.float16


def test_bad_bits_and_group_sizes_are_refused():
    with pytest.raises(CheersError, match=r"unsupported bits 3"):
        LowBitSpec(3, 64)
    with pytest.raises(CheersError, match=r"unsupported group size 7"):
        LowBitSpec(4, 7)
    with pytest.raises(CheersError, match=r"group size 40 does not divide the 192 inputs of x"):
        LowBitSpec(4, 40).check_layer("x", 192)
    with pytest.raises(CheersError, match="unknown quantization method"):
        QuantizeSettings(method="gptq")
    with pytest.raises(CheersError, match="projectors"):
        QuantizeSettings(groups=("projectors",))


# ------------------------------------------------------------------------ decoupleQ's steps
def test_the_float_step_is_the_least_squares_solution():
    """Checked against torch.linalg.lstsq on the explicit design matrix of each row."""
    torch.manual_seed(0)
    x = correlated_inputs(400, 64)
    h = (x.T @ x).double()
    w = torch.randn(5, 64) * 0.1
    spec = LowBitSpec(2, 16)
    q, _, _ = rtn(w, spec)
    scales, zeros = solve_floats(w, q, h, spec)
    chol = torch.linalg.cholesky(h)
    for r in range(w.shape[0]):
        design = torch.zeros(64, 8, dtype=torch.float64)  # 4 scales, 4 zeros
        for k in range(4):
            design[k * 16 : (k + 1) * 16, k] = q[r, k * 16 : (k + 1) * 16].double()
            design[k * 16 : (k + 1) * 16, 4 + k] = 1.0
        theta = torch.linalg.lstsq(chol.T @ design, chol.T @ w[r].double()).solution
        torch.testing.assert_close(scales[r].double(), theta[:4], rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(zeros[r].double(), theta[4:], rtol=1e-3, atol=1e-5)


def test_the_integer_step_with_uncorrelated_inputs_is_rounding():
    """With H = I no column's error can be compensated by another: GPTQ is rounding."""
    w = torch.randn(8, 64)
    spec = LowBitSpec(4, 32)
    q, scales, zeros = rtn(w, spec)
    assert torch.equal(solve_integers(w, scales, zeros, torch.eye(64), spec), q)


@pytest.mark.parametrize(("bits", "group"), [(2, 64), (4, 64), (2, 0)])
def test_decoupleq_lowers_the_layer_output_error_below_rtn(bits, group):
    """Measured as ‖X Wᵀ − X Ŵᵀ‖² on the calibration activations themselves."""
    x = correlated_inputs(1000, 128, seed=bits)
    w = torch.randn(48, 128) * 0.05
    spec = LowBitSpec(bits, group)
    result = decoupleq_layer(w, x.T @ x, spec, rounds=3)

    def error(q, s, z):
        return float((x @ w.T - x @ dequantize(q, s, z).T).pow(2).sum())

    ours, baseline = error(result.q, result.scales, result.zeros), error(*rtn(w, spec))
    assert ours < 0.5 * baseline
    assert result.rtn_error == pytest.approx(baseline, rel=1e-3)
    assert output_error(w, dequantize(result.q, result.scales, result.zeros), x.T @ x) == (
        pytest.approx(ours, rel=1e-3)
    )


# ---------------------------------------------------------------------- the model transform
@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    write_split(folder, "train", 8, seed=5)
    write_split(folder, "val", 6, seed=6)
    return folder


def _next_token_kl(reference: CheersPipeline, pipe: CheersPipeline, prompts) -> float:
    total = 0.0
    for prompt in prompts:
        rows = reference.inputs.chat_rows([prompt], False, None)
        batch = left_pad(reference.inputs.sequences(*zip(*rows, strict=True)))
        mask = omni_mask(batch.block, batch.valid)
        logs = []
        for p in (reference, pipe):
            with torch.no_grad():
                hidden = p.model.transformer(batch.embeds, batch.positions, mask)
                logs.append(torch.log_softmax(p.model.logits(hidden[:, -1]), -1))
        total += float((logs[0].exp() * (logs[0] - logs[1])).sum())
    return total / len(prompts)


def test_decoupleq_2bit_model_is_closer_to_float_than_rtn(calibration):
    float32 = CheersPipeline.from_pretrained(MODEL)
    kl = {}
    for method in ("rtn", "decoupleq"):
        pipe = CheersPipeline.from_pretrained(MODEL)
        settings = QuantizeSettings(method=method, bits=2, block_steps=20)
        batches = calibration_batches(pipe, calibration / "train.jsonl", samples=8)
        report = quantize_model(pipe.model, settings, batches)
        assert len(report.layer_errors) == 28  # 4 layers × (q, k, v, o, gate, up, down)
        if method == "decoupleq":
            assert all(after <= before for before, after in report.block_errors.values())
            assert all(ours <= rtn for rtn, ours in report.layer_errors.values())
        prompts = ["What shapes do you know?", "Name a colour.", "Describe a red circle."]
        kl[method] = _next_token_kl(float32, pipe, prompts)
    assert kl["decoupleq"] < kl["rtn"]


def test_a_quantized_folder_reloads_to_identical_outputs(calibration, tmp_path):
    settings = QuantizeSettings(method="decoupleq", bits=4, block_steps=5)
    out, _ = quantize_folder(MODEL, tmp_path / "w4", settings, calibration / "train.jsonl", 4)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "decoupleq" and config["bits"] == 4
    assert config["group_size"] == 64 and len(config["modules"]) == 28
    loaded = CheersPipeline.from_pretrained(out)
    layer = loaded.model.get_submodule("model.language_model.layers.2.mlp.down_proj")
    assert isinstance(layer, LowBitLinear) and layer.qweight.dtype == torch.uint8
    # The same transform in memory gives the same numbers as the folder.
    pipe = CheersPipeline.from_pretrained(MODEL)
    batches = calibration_batches(pipe, calibration / "train.jsonl", samples=4)
    quantize_model(pipe.model, settings, batches)
    memory = pipe.model.get_submodule("model.language_model.layers.2.mlp.down_proj")
    assert torch.equal(memory.qweight, layer.qweight) and torch.equal(memory.scales, layer.scales)
    question = ("What color is the shape?",)
    image = calibration / "images" / "shapes-val-0000000.png"
    assert pipe.understand(image, *question, max_new_tokens=8) == loaded.understand(
        image, *question, max_new_tokens=8
    )
    # Saving the loaded pipeline again writes the same folder format.
    again = loaded.save_pretrained(tmp_path / "again")
    reloaded = CheersPipeline.from_pretrained(again)
    assert torch.equal(
        reloaded.model.get_submodule("model.language_model.layers.2.mlp.down_proj").qweight,
        layer.qweight,
    )


def test_a_quantized_folder_that_does_not_match_its_config_is_refused(tmp_path):
    out, _ = quantize_folder(MODEL, tmp_path / "w2", QuantizeSettings(method="rtn", bits=2))
    config_path = out / "config.json"
    original = json.loads(config_path.read_text())
    wrong_bits = json.loads(json.dumps(original))
    wrong_bits["quantization_config"]["bits"] = 4
    config_path.write_text(json.dumps(wrong_bits))
    with pytest.raises(CheckpointError, match=r"qweight: checkpoint .* has shape"):
        CheersPipeline.from_pretrained(out)
    wrong_name = json.loads(json.dumps(original))
    wrong_name["quantization_config"]["modules"].append("model.language_model.layers.9.mlp")
    config_path.write_text(json.dumps(wrong_name))
    with pytest.raises(CheckpointError, match=r"layers\.9\.mlp.*no linear layer"):
        CheersPipeline.from_pretrained(out)
    missing = json.loads(json.dumps(original))
    del missing["quantization_config"]
    config_path.write_text(json.dumps(missing))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\).*qweight"):
        CheersPipeline.from_pretrained(out)
    config_path.write_text(json.dumps(original))
    with pytest.raises(CheckpointError, match="2-bit quantized weights already"):
        CheersPipeline.from_pretrained(out, quantize="int8")
    with pytest.raises(CheckpointError, match="quantized weights already"):
        quantize_folder(out, tmp_path / "twice", QuantizeSettings(method="rtn"))


def test_calibration_data_must_be_there_and_not_empty(tmp_path):
    pipe = CheersPipeline.from_pretrained(MODEL)
    with pytest.raises(DataError, match="needs calibration data"):
        calibration_batches(pipe, None)
    with pytest.raises(DataError, match="does not exist"):
        calibration_batches(pipe, tmp_path / "nothing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no samples"):
        calibration_batches(pipe, tmp_path / "empty.jsonl")
    with pytest.raises(CheersError, match="needs calibration batches"):
        quantize_model(pipe.model, QuantizeSettings(method="decoupleq"), None)


def test_cheers_quantize_errors_leave_nothing_written(tmp_path, capsys, calibration):
    out = tmp_path / "out"
    assert main(["quantize", MODEL, str(out), "--bits", "2"]) == 2
    assert "needs --calibration" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    argv = ["quantize", MODEL, str(out), "--calibration", str(tmp_path / "empty.jsonl")]
    assert main(argv) == 2
    assert "holds no samples" in capsys.readouterr().err
    assert main(["quantize", MODEL, str(out), "--bits", "3"]) == 2
    assert "invalid choice: 3" in capsys.readouterr().err
    argv = ["quantize", MODEL, str(out), "--method", "rtn", "--group-size", "40"]
    assert main(argv) == 2
    assert "group size 40 does not divide" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    argv = ["quantize", MODEL, str(out), "--method", "rtn", "--bits", "4", "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    original = Path(MODEL, "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size < 0.8 * original
