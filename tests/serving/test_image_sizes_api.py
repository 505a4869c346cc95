"""OpenAI's images API with a ``size`` other than the native one, through the real client."""

from __future__ import annotations

import numpy as np
import pytest
from live_server import STEPS, decode_b64_png, png_bytes

openai = pytest.importorskip("openai")


def test_images_generate_at_a_non_square_size(client, pipe):
    result = client.images.generate(
        model="cheers",
        prompt="a blue square",
        size="80x48",
        response_format="b64_json",
        extra_body={"seed": 5, "num_inference_steps": STEPS},
    )
    image = decode_b64_png(result.data[0].b64_json)
    assert image.size == (80, 48)
    reference = pipe(
        "a blue square", num_inference_steps=STEPS, generator=5, height=48, width=80
    ).images[0]
    # Same pixels up to one level of 255 (batching reorders float sums).
    served, alone = (np.asarray(im, dtype=np.int16) for im in (image, reference))
    assert served.shape == alone.shape == (48, 80, 3)
    assert np.abs(served - alone).max() <= 1


def test_images_edit_at_a_non_square_size(client, pipe):
    source = pipe("a red circle", num_inference_steps=4, generator=0).images[0]
    result = client.images.edit(
        image=("source.png", png_bytes(source), "image/png"),
        prompt="make it green",
        size="48x80",
        extra_body={"seed": 2, "num_inference_steps": 5},
    )
    assert decode_b64_png(result.data[0].b64_json).size == (48, 80)


@pytest.mark.parametrize("size", ["50x64", "64", "4096x4096"])
def test_a_size_the_model_cannot_make_is_a_400_naming_size(client, size):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="cheers", prompt="a red circle", size=size)
    assert caught.value.status_code == 400
    assert "size" in str(caught.value)
