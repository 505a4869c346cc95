"""Every tensor layout checked element by element against docs/architecture.md's formulas."""

from __future__ import annotations

import itertools

import torch

from cheers.layouts import (
    feature_map_to_tokens,
    latent_depth_to_space,
    latent_space_to_depth,
    merge_tokens,
    phase_view,
    tokens_to_feature_map,
    unmerge_tokens,
)


def test_latent_space_to_depth_channel_order():
    z, h, w = 3, 4, 6
    x = torch.randn(2, z, h, w)
    out = latent_space_to_depth(x)
    assert out.shape == (2, 4 * z, h // 2, w // 2)
    for c, i, j, r, s in itertools.product(
        range(z), range(2), range(2), range(h // 2), range(w // 2)
    ):
        # docs/architecture.md §3: new channel index c·4 + i·2 + j
        assert out[1, c * 4 + i * 2 + j, r, s] == x[1, c, 2 * r + i, 2 * s + j]
    assert torch.equal(latent_depth_to_space(out), x)


def test_token_merge_is_position_major():
    grid, ch = 4, 3
    x = torch.randn(2, grid * grid, ch)
    out = merge_tokens(x, grid)
    half = grid // 2
    assert out.shape == (2, half * half, 4 * ch)
    for r, c, i, j, k in itertools.product(range(half), range(half), range(2), range(2), range(ch)):
        # docs/architecture.md §5: output token (r, c) row-major; feature (i·2 + j)·C + channel
        assert out[0, r * half + c, (i * 2 + j) * ch + k] == x[0, (2 * r + i) * grid + 2 * c + j, k]
    assert torch.equal(unmerge_tokens(out, grid), x)


def test_semantic_head_unpatchify_goes_to_grid_cells():
    grid, ch = 6, 2
    half = grid // 2
    y = torch.randn(1, half * half, 4 * ch)
    cells = unmerge_tokens(y, grid)
    for r, c, i, j, k in itertools.product(range(half), range(half), range(2), range(2), range(ch)):
        # docs/architecture.md §8: feature (i·2 + j)·C_vit + channel goes to cell (2r+i, 2c+j)
        assert (
            cells[0, (2 * r + i) * grid + 2 * c + j, k] == y[0, r * half + c, (i * 2 + j) * ch + k]
        )


def test_tokens_and_feature_maps_are_row_major():
    x = torch.randn(2, 5, 3, 4)
    tokens = feature_map_to_tokens(x)
    for c, h, w in itertools.product(range(5), range(3), range(4)):
        assert tokens[1, h * 4 + w, c] == x[1, c, h, w]
    square = torch.randn(1, 7, 4, 4)
    assert torch.equal(tokens_to_feature_map(feature_map_to_tokens(square), 4), square)


def test_token_merge_of_any_cell_size():
    """k×k merges (k = 1 is the no-compression ablation) follow the same index formula."""
    for cell, grid, ch in ((1, 3, 2), (3, 6, 2)):
        x = torch.randn(1, grid * grid, ch)
        out = merge_tokens(x, grid, cell)
        side = grid // cell
        assert out.shape == (1, side * side, cell * cell * ch)
        for r, c, i, j, k in itertools.product(
            range(side), range(side), range(cell), range(cell), range(ch)
        ):
            source = x[0, (cell * r + i) * grid + cell * c + j, k]
            assert out[0, r * side + c, (i * cell + j) * ch + k] == source
        assert torch.equal(unmerge_tokens(out, grid, cell), x)
    x = torch.randn(2, 16, 3)
    assert torch.equal(merge_tokens(x, 4, 1), x)


def test_phase_view_is_a_view_of_the_sub_pixel_phases():
    b, c, h, w = 2, 3, 4, 5
    x = torch.arange(b * c * 2 * h * 2 * w, dtype=torch.float32).reshape(b, c, 2 * h, 2 * w)
    phases = phase_view(x)
    assert phases.shape == (b, 2, 2, c, h, w)
    assert phases.data_ptr() == x.data_ptr()
    for n, i, j, k, r, s in itertools.product(
        range(b), range(2), range(2), range(c), range(h), range(w)
    ):
        assert phases[n, i, j, k, r, s] == x[n, k, 2 * r + i, 2 * s + j]
    phases[1, 1, 0, 2, 3, 4] = -1.0  # writing a phase writes its pixel
    assert x[1, 2, 2 * 3 + 1, 2 * 4 + 0] == -1.0
