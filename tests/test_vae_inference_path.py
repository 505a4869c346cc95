"""The VAE's inference-only shortcuts against the direct forms that training uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cheers.modules.vae import ResnetBlock, Upsample


def test_upsample_by_phases_equals_conv_of_the_upsampled_map():
    torch.manual_seed(0)
    up = Upsample(8)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        direct = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        fast = up(x)
    assert fast.shape == direct.shape == (2, 8, 10, 14)
    torch.testing.assert_close(fast, direct, rtol=0, atol=1e-5 * direct.abs().max().item())


def test_resnet_block_in_place_at_inference_gives_the_same_numbers():
    torch.manual_seed(0)
    for channels_in, channels_out in ((32, 32), (32, 64)):  # with and without the 1×1 shortcut
        block = ResnetBlock(channels_in, channels_out)
        x = torch.randn(2, channels_in, 6, 6)
        with torch.enable_grad():
            trained_form = block(x)  # copies kept for autograd
        with torch.no_grad():
            x_before = x.clone()
            in_place = block(x)
        assert torch.equal(in_place, trained_form.detach())
        assert torch.equal(x, x_before)  # the block's input is never overwritten
