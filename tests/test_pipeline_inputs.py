"""Bad arguments to the Python API and the CLI give a CheersError naming them, never a
traceback from deep inside (issue 15's list)."""

from __future__ import annotations

import numpy as np
import pytest

from cheers import CheersPipeline
from cheers.cli import main
from cheers.errors import CheersError

MODEL = "src/cheers/default_model"
IMAGE = np.zeros((8, 8, 3), np.uint8)


@pytest.fixture(scope="module")
def pipe():
    return CheersPipeline.from_pretrained(MODEL)


CASES = {
    "guidance_scale": lambda p: p("a", num_inference_steps=2, guidance_scale="9.5"),
    "prompt": lambda p: p(None, num_inference_steps=2),
    "question": lambda p: p.understand(IMAGE, None),
    "latents": lambda p: p("a", num_inference_steps=2, latents=np.zeros((1, 32, 8, 8))),
    "temperature": lambda p: p.chat("hi", temperature=float("nan")),
    "top_p": lambda p: p.chat("hi", temperature=0.5, top_p=0.0),
    "seed": lambda p: p("a", num_inference_steps=2, generator=2**70),
    "guidance_scale ": lambda p: p("a", num_inference_steps=2, guidance_scale=float("nan")),
    "empty prompt": lambda p: p.chat(""),
    "guidance_scale  ": lambda p: p.edit(IMAGE, "make it red", guidance_scale=float("inf")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_argument_is_a_named_cheers_error(pipe, name):
    with pytest.raises(CheersError, match=name.strip().split()[-1]):
        CASES[name](pipe)


def test_cli_refuses_an_overflowing_seed(tmp_path, capsys):
    code = main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path),
                 "--seed", "123456789012345678901234567890"])  # fmt: skip
    assert code == 2
    assert "seed" in capsys.readouterr().err
