"""Assembling LLM input sequences: splicing image tokens into text, positions, the omni mask.

A sequence is described per token by ``block``: −1 for a token that attends causally (text, and
the reference's dummy image), k ≥ 0 for the k-th image block, whose tokens also see each other.
Batches are left-padded; ``valid`` marks real tokens and positions count only real tokens, so a
padded row computes exactly what it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cheers.errors import PromptError

# The reference's processor writes -200 where an image goes; our tokenizer writes `<image>`.
IMAGE_PLACEHOLDER = -200
CAUSAL = -1


@dataclass
class Batch:
    """Left-padded LLM inputs for B sequences of length T."""

    embeds: torch.Tensor  # (B, T, D)
    valid: torch.Tensor  # (B, T) bool
    block: torch.Tensor  # (B, T) int64, CAUSAL or image-block index
    positions: torch.Tensor  # (B, T) int64

    @property
    def lengths(self) -> torch.Tensor:
        return self.valid.sum(1)


def splice(
    input_ids: Sequence[int] | torch.Tensor,
    embed: torch.Tensor,
    images: Sequence[torch.Tensor],
    image_token_id: int,
    causal_prefix: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence: text embeddings with each image placeholder replaced by its tokens.

    ``embed`` are the token embeddings of ``input_ids`` (placeholders embedded as anything);
    ``images`` holds one (P, D) tensor per placeholder, in order. ``causal_prefix`` (N, D) is
    put in front with causal attention (the reference's dummy image for text-only requests).
    Returns the embeddings (T, D) and the block index of each token (T,).
    """
    ids = torch.as_tensor(input_ids).tolist()
    slots = [i for i, tok in enumerate(ids) if tok in (image_token_id, IMAGE_PLACEHOLDER)]
    if len(slots) != len(images):
        # A PromptError (a ValueError too): the count comes from what the user wrote.
        raise PromptError(
            f"the prompt has {len(slots)} image placeholder(s) but {len(images)} image(s) were "
            "given; write one `<im_start><image><im_end>` per image"
        )
    pieces: list[torch.Tensor] = []
    blocks: list[torch.Tensor] = []
    if causal_prefix is not None:
        pieces.append(causal_prefix)
        blocks.append(torch.full((causal_prefix.shape[0],), CAUSAL))
    start = 0
    for k, (slot, image) in enumerate(zip(slots, images, strict=True)):
        pieces += [embed[start:slot], image.to(embed.dtype)]
        blocks += [torch.full((slot - start,), CAUSAL), torch.full((image.shape[0],), k)]
        start = slot + 1
    pieces.append(embed[start:])
    blocks.append(torch.full((len(ids) - start,), CAUSAL))
    return torch.cat(pieces), torch.cat(blocks).to(embed.device)


def unconditional_ids(ids: Sequence[int], keep: set[int], no_mean_id: int) -> list[int]:
    """The guidance prompt: every id (template and system prompt included) becomes
    ``<no_mean>``, except those in ``keep`` (`<im_start>`, `<im_end>`, image placeholders)."""
    return [i if i in keep else no_mean_id for i in ids]


def left_pad(sequences: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    """Stack (embeds, block) pairs of different lengths, padding on the left."""
    length = max(e.shape[0] for e, _ in sequences)
    first = sequences[0][0]
    b, d = len(sequences), first.shape[1]
    embeds = first.new_zeros(b, length, d)
    valid = torch.zeros(b, length, dtype=torch.bool, device=first.device)
    block = torch.full((b, length), CAUSAL, dtype=torch.long, device=first.device)
    for i, (e, blk) in enumerate(sequences):
        n = e.shape[0]
        embeds[i, length - n :] = e
        valid[i, length - n :] = True
        block[i, length - n :] = blk
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    return Batch(embeds, valid, block, positions)


def omni_mask(block: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, T) boolean mask: causal, bidirectional inside each image block.

    Real tokens see only real tokens and padding only padding, so no row is empty.
    """
    t = block.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=block.device).tril()
    same_image = (block[:, :, None] == block[:, None, :]) & (block[:, :, None] >= 0)
    same_kind = valid[:, :, None] == valid[:, None, :]
    return (causal[None] | same_image) & same_kind


def appended_block_mask(prefix_valid: torch.Tensor, n_new: int) -> torch.Tensor:
    """(B, N, L+N) mask for N new tokens that see the valid prefix and each other."""
    b = prefix_valid.shape[0]
    new = torch.ones(b, n_new, n_new, dtype=torch.bool, device=prefix_valid.device)
    return torch.cat([prefix_valid[:, None, :].expand(b, n_new, -1), new], dim=2)
