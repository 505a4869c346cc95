"""Qwen2 decoder with a static KV cache (docs/architecture.md §7)."""

from __future__ import annotations

import torch
from torch import nn

from cheers.config import TextConfig
from cheers.modules.common import RMSNorm, SwiGLU, apply_rope, attention, rope_cos_sin


class KVCache:
    """Pre-allocated keys and values of every layer, (B, Hkv, max_len, D) each.

    Writing at ``start`` never moves what lies before it, so a block appended for one velocity
    evaluation is "dropped" simply by writing the next one at the same offset.
    """

    kind = "float"  # the KV format (cheers.model.KV_CACHES)

    def __init__(
        self,
        cfg: TextConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.max_len, self.dtype = max_len, dtype
        self.keys = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)
        ]
        self.values = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)
        ]

    def layer(self, index: int) -> LayerCache:
        """The keys and values of decoder layer ``index``."""
        return LayerCache(self.keys[index], self.values[index])

    def rows(self, n: int) -> KVCache:
        """A view of the first ``n`` batch rows sharing this cache's memory (no copy): e.g. the
        conditional half when guidance is off for a step."""
        view = object.__new__(KVCache)
        view.max_len, view.dtype = self.max_len, self.dtype
        view.keys = [k[:n] for k in self.keys]
        view.values = [v[:n] for v in self.values]
        return view

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    def tensors(self) -> list[torch.Tensor]:
        """Every stored tensor (what static decoding marks as static addresses)."""
        return [*self.keys, *self.values]

    def select(self, index: torch.Tensor) -> KVCache:
        """Keep only the batch rows in ``index`` (e.g. the conditional half after guidance)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        return self


class LayerCache:
    """One decoder layer's pre-allocated keys and values, (B, Hkv, max_len, D) each.

    Each layer gets its own (not the whole cache and its index), so the layers look alike to
    ``torch.compile``: one compiled graph serves all of them instead of one per layer index.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def update(
        self, k: torch.Tensor, v: torch.Tensor, start: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` (B, Hkv, T, D) at ``start``; the keys/values up to them.

        A tensor ``start`` holds the T cache slots to write instead: the whole cache comes
        back, the same shape at every call (static-shape decoding, see
        :mod:`cheers.pipeline.static_decoding`), and the caller's mask hides the slots not
        written yet.
        """
        if isinstance(start, torch.Tensor):
            self.keys.index_copy_(2, start, k)
            self.values.index_copy_(2, start, v)
            return self.keys, self.values
        end = start + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache overflow: need {end} positions, have {self.keys.shape[2]}")
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]

    # A quantized cache may store keys and values in a rotated basis (cheers.modules.int4_cache);
    # this one stores them as they are.
    def rotate_queries(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def restore_outputs(self, out: torch.Tensor) -> torch.Tensor:
        return out


class Qwen2Attention(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            hd,
        )
        self.q_proj = nn.Linear(d, cfg.num_attention_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=True)
        self.o_proj = nn.Linear(cfg.num_attention_heads * hd, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: LayerCache | None,
        start: int | torch.Tensor,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is None:
            return self.o_proj(attention(q, k, v, mask))
        k, v = cache.update(k, v, start)
        out = attention(cache.rotate_queries(q), k, v, mask)
        return self.o_proj(cache.restore_outputs(out))


class Qwen2MLP(SwiGLU):
    pass


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = Qwen2Attention(cfg)
        self.mlp = Qwen2MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, rope, mask, cache: LayerCache | None, start: int | torch.Tensor
    ):
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2Model(nn.Module):
    """Token embeddings, decoder layers and the final norm (``model.language_model``)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if cfg.hidden_act != "silu":
            raise ValueError(f"unsupported text hidden_act {cfg.hidden_act!r}")
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        start: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """Embeddings (B, T, D) at ``position_ids`` (B, T) → final hidden states (B, T, D).

        ``mask`` is boolean (B, T, S) or (B, 1, T, S), True = may attend, where S covers the
        cache up to ``start + T`` (or T without a cache); the new keys are written at ``start``
        (a tensor ``start``: at those T slots, and S is the whole cache, see
        :meth:`LayerCache.update`).
        """
        if mask is not None and mask.dim() == 3:
            mask = mask[:, None]
        rope = rope_cos_sin(
            position_ids, self.cfg.head_dim, self.cfg.rope_theta, inputs_embeds.dtype
        )
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(
                    layer, x, rope, mask, None, start, use_reentrant=False
                )
            else:
                x = layer(x, rope, mask, None if cache is None else cache.layer(i), start)
        return self.norm(x)
