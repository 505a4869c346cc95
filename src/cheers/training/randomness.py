"""Each training sample's own random stream, shared by the joint and the autoencoder batches."""

from __future__ import annotations

import torch


def sample_generator(seed: int, uid: int) -> torch.Generator:
    """Each sample's own random stream: independent of batch composition and process count."""
    return torch.Generator().manual_seed((seed * 1_000_000_007 + uid) % (2**63))
