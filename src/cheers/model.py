"""The Cheers network: every component wired together, with the checkpoint's module names.

Read top to bottom: images become normalised VAE latents; a latent (noisy or clean) is decoded
by the decoder projector into pixels, encoded by the ViT and compressed into LLM tokens; the LLM
reads text and image tokens; for generation its hidden states at the image positions go through
the semantic head, the gate and the detail head to a velocity in latent space.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from cheers.config import CheersConfig
from cheers.errors import CheersError
from cheers.layouts import tokens_to_feature_map, unmerge_tokens
from cheers.modules.common import RMSNorm
from cheers.modules.heads import FlowHead, HiGate, TimestepEmbedder
from cheers.modules.int4_cache import Int4KVCache
from cheers.modules.language import KVCache, Qwen2Model
from cheers.modules.projector import UndProjector
from cheers.modules.vae import VAE, DecoderProjector
from cheers.modules.vision import VisionTransformer
from cheers.samplers.base import velocity_from_head
from cheers.samplers.guidance import apply_guidance

#: How a KV cache stores keys and values (:meth:`Cheers.set_kv_cache`).
KV_CACHES = ("float", "int4", "int4-naive")


@dataclass
class ImageTokens:
    """What the unified vision tokenizer computes from one latent (docs/architecture.md §6)."""

    pixel_hat: torch.Tensor | None  # (B, 3, H, W): the decoder projector's pixels (None
    # when the ViT reads latents)
    patch_embeds: torch.Tensor  # (B, G·G, C_vit): ViT patch + position embeddings
    vit_hidden: torch.Tensor  # (B, G·G, C_vit): ViT output
    tokens: torch.Tensor  # (B, P, D_llm): the LLM tokens


@dataclass
class Velocity:
    """One velocity evaluation of the cascaded head, with its intermediates."""

    velocity: torch.Tensor  # (B, 4z, G, G)
    t_emb_1: torch.Tensor
    t_emb_2: torch.Tensor
    gen_proj_out: torch.Tensor  # (B, P, k²·C_vit), k = token_merge
    hi_gate_low: torch.Tensor  # (B, G·G, C_vit); G·G = 4P
    hi_gate_out: torch.Tensor  # (B, G·G, C_vit)
    hi_proj_out: torch.Tensor  # (B, G·G, 4z)


@dataclass
class FlowContext:
    """The prompt side of a velocity evaluation: the prefilled KV cache and where x_t's P image
    tokens go in it. With guidance the cache holds the B conditional rows, then their B
    unconditional twins; guidance applies at the times inside ``guidance_interval``."""

    cache: KVCache | Int4KVCache
    start: int  # cache offset of the image tokens (the padded prefix length)
    positions: torch.Tensor  # (R, P) RoPE positions of the image tokens
    mask: torch.Tensor  # (R, P, start + P)
    guidance_scale: float | None = None
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def guided_at(self, t: float) -> bool:
        lo, hi = self.guidance_interval
        return self.guidance_scale is not None and lo <= t <= hi


@dataclass
class FlowVelocity:
    """The (guided) velocity of one step and the branches it came from."""

    velocity: torch.Tensor  # (B, 4z, G, G), float32
    cond: torch.Tensor
    uncond: torch.Tensor | None  # None where guidance was off


class CheersModel(nn.Module):
    """Everything under the checkpoint prefix ``model.``."""

    def __init__(self, cfg: CheersConfig) -> None:
        super().__init__()
        vit, text = cfg.vision_representation_config, cfg.text_config
        cell = cfg.token_merge
        self.vae_model = VAE(cfg.vae_encoder_config, cfg.vae_decoder_config)
        if cfg.vit_input == "pixels":
            self.vae_decoder_projector = DecoderProjector(cfg.vae_decoder_config)
            self.vision_representation = VisionTransformer(vit)
        else:  # ablation: the ViT patchifies the latent grid itself (1×1 patches, 4z channels)
            self.vae_decoder_projector = None
            self.vision_representation = VisionTransformer(
                dataclasses.replace(
                    vit,
                    num_channels=cfg.latent_channels,
                    image_size=cfg.grid_size,
                    patch_size=1,
                )
            )
        self.und_projector = UndProjector(vit.hidden_size, text.hidden_size, cell)
        self.language_model = Qwen2Model(text)
        self.time_embed = TimestepEmbedder(text.hidden_size, vit.hidden_size)
        self.gen_projector = FlowHead(
            dim=text.hidden_size,
            out_dim=cell * cell * vit.hidden_size,
            depth=cfg.semantic_head_layers,
            num_heads=text.num_attention_heads,
            num_kv_heads=text.num_key_value_heads,
        )
        self.hi_gate = HiGate(vit.hidden_size)
        # The reference gives the detail head the LLM's KV-head count and takes its output width
        # from the VAE decoder's `ch` (validated to equal the latent channels).
        self.hi_projector = FlowHead(
            dim=vit.hidden_size,
            out_dim=cfg.vae_decoder_config.ch,
            depth=cfg.detail_head_layers,
            num_heads=vit.num_attention_heads,
            num_kv_heads=text.num_key_value_heads,
        )


class Cheers(nn.Module):
    """The full model: :class:`CheersModel` plus the output projection ``lm_head``."""

    def __init__(self, config: CheersConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.model = CheersModel(config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.tie_weights()
        # The compute dtype is held, never read back from a weight: a transform may store
        # weights in another dtype (int8) while activations stay in this one. It starts as
        # the dtype the parameters were built in; load_model and to(dtype) set it.
        self.compute_dtype: torch.dtype = torch.get_default_dtype()
        # Where inputs, caches and activations live; None: where lm_head is. Model offload
        # (cheers.transforms.offload) sets it while components travel between devices.
        self.execution_device: torch.device | None = None
        # How the KV caches of generation store keys and values (set_kv_cache).
        self.kv_cache: str = "float"

    @torch.no_grad()
    def init_weights(self, std: float | None = None) -> Cheers:
        """Initialise for training from scratch (the released model is loaded instead).

        Linear, convolution and embedding weights ~ N(0, std) (the config's initializer_range),
        biases 0, norms 1; the adaLN modulations of the flow heads and the gate's last layer
        start at zero as in the reference, so each block starts as the identity and the gate
        closed. BatchNorm statistics are reset to mean 0, variance 1.
        """
        std = self.config.text_config.initializer_range if std is None else std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
            elif isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, std=std)
                nn.init.zeros_(module.in_proj_bias)
        for head in (self.model.gen_projector, self.model.hi_projector):
            for block in [*head.diffusion_head_a, head.diffusion_head_b]:
                nn.init.zeros_(block.adaLN_modulation[1].weight)
                nn.init.zeros_(block.adaLN_modulation[1].bias)
        nn.init.zeros_(self.model.hi_gate.gate[2].weight)
        nn.init.zeros_(self.model.hi_gate.gate[2].bias)
        return self

    def tie_weights(self) -> None:
        """Share ``lm_head`` with the token embeddings when the config ties them."""
        if self.config.text_config.tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight

    # ------------------------------------------------------------------ helpers
    def to(self, *args, **kwargs) -> Cheers:
        """:meth:`nn.Module.to`, which also sets the compute dtype when given one."""
        _, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        super().to(*args, **kwargs)
        if dtype is not None:
            self.compute_dtype = dtype
        return self

    def float(self) -> Cheers:
        return self.to(torch.float32)

    def bfloat16(self) -> Cheers:
        return self.to(torch.bfloat16)

    def half(self) -> Cheers:
        return self.to(torch.float16)

    def double(self) -> Cheers:
        return self.to(torch.float64)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (activations, KV cache); see ``compute_dtype``."""
        return self.compute_dtype

    @property
    def device(self) -> torch.device:
        """The execution device (inputs, caches, activations)."""
        if self.execution_device is not None:
            return self.execution_device
        return self.lm_head.weight.device

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    def set_kv_cache(self, kind: str) -> None:
        """Store the KV caches of generation as ``kind``, one of :data:`KV_CACHES`: "float"
        (the compute dtype), "int4" (SAW-INT4: 4-bit after a block Hadamard rotation,
        :mod:`cheers.modules.int4_cache`) or "int4-naive" (4-bit, no rotation; a baseline).

        The config guarantees an even head dimension (RoPE), which is what INT4 packing (two
        values a byte) and the rotation (a power-of-two block of it) need.

        Raises:
            CheersError: an unknown kind.
        """
        if kind not in KV_CACHES:
            raise CheersError(f"unknown KV cache {kind!r}; use one of {', '.join(KV_CACHES)}")
        self.kv_cache = kind

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache | Int4KVCache:
        """An empty cache of ``max_len`` positions per row, in the model's KV format."""
        cfg = self.config.text_config
        if self.kv_cache == "float":
            return KVCache(cfg, batch_size, max_len, self.dtype, self.device)
        rotate = self.kv_cache == "int4"
        return Int4KVCache(cfg, batch_size, max_len, self.dtype, self.device, rotate)

    # ------------------------------------------------------------ vision path
    def encode_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, R, R) in [0, 1] → clean normalised latents x1 (B, 4z, G, G)."""
        return self.model.vae_model.encode(pixels.to(self.dtype))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latents → images with the frozen VAE decoder (not clamped)."""
        return self.model.vae_model.decode(latent.to(self.dtype))

    def image_tokens(self, latent: torch.Tensor) -> ImageTokens:
        """A (possibly noisy) latent x_t → pixels → ViT → LLM tokens (docs/architecture.md §6)."""
        m = self.model
        latent = latent.to(self.dtype)
        if m.vae_decoder_projector is None:
            pixel_hat = None
            patch_embeds = m.vision_representation.embeddings(latent)
        else:
            pixel_hat = m.vae_decoder_projector(latent)
            patch_embeds = m.vision_representation.embeddings(pixel_hat)
        vit_hidden = m.vision_representation.encode_embeddings(patch_embeds)
        rows = latent.shape[-2]  # the ViT grid is the latent grid (§11), square or not
        tokens = m.und_projector(vit_hidden, rows, self.dtype)
        return ImageTokens(pixel_hat, patch_embeds, vit_hidden, tokens)

    def understanding_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, R, R) → their LLM tokens (B, P, D) at t = 1."""
        return self.image_tokens(self.encode_latent(pixels)).tokens

    # ----------------------------------------------------------- language path
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.language_model.embed_tokens(input_ids)

    def transformer(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        start: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """The LLM's final hidden states; see :meth:`Qwen2Model.forward`."""
        return self.model.language_model(inputs_embeds, position_ids, mask, cache, start)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    # ----------------------------------------------------------- flow heads
    def flow_velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, context: FlowContext
    ) -> FlowVelocity:
        """The velocity seam: x_t (B, 4z, G, G) at time ``t`` (a scalar) given the prompt
        context → the (guided) velocity. The image path (decoder projector → ViT → merge) runs
        once on the B latents; only the LLM and the heads see both guidance branches."""
        b = x_t.shape[0]
        guided = context.guided_at(float(t))
        rows = 2 * b if guided else b
        image = self.image_tokens(x_t)
        tokens, patch_embeds = image.tokens, image.patch_embeds
        if guided:
            tokens, patch_embeds = tokens.repeat(2, 1, 1), patch_embeds.repeat(2, 1, 1)
        cache = context.cache
        if cache.batch_size != rows:
            cache = cache.rows(rows)
        hidden = self.transformer(
            tokens, context.positions[:rows], context.mask[:rows], cache, context.start
        )
        t_rows = torch.as_tensor(t, device=x_t.device).expand(rows)
        # Only a head whose output is not the velocity itself needs x_t, per row (a copy per
        # guided step otherwise).
        x_rows = None
        if self.config.flow_prediction != "velocity":
            x_rows = x_t.repeat(2, 1, 1, 1) if guided else x_t
        v = self.velocity(hidden, patch_embeds, t_rows, x_rows, rows=x_t.shape[-2]).velocity
        v = v.float()
        if not guided:
            return FlowVelocity(v, v, None)
        cond, uncond = v.chunk(2)
        return FlowVelocity(apply_guidance(cond, uncond, context.guidance_scale), cond, uncond)

    def velocity(
        self,
        image_hidden: torch.Tensor,
        patch_embeds: torch.Tensor,
        t: torch.Tensor,
        x_t: torch.Tensor | None = None,
        rows: int | None = None,
    ) -> Velocity:
        """LLM hidden states at the P image positions → latent velocity (docs/architecture.md §8).

        ``patch_embeds`` are the ViT patch embeddings of the same x_t's pixels (the detail
        input of the gate); ``t`` has shape (B,). ``x_t`` (B, 4z, G, G) is needed when the
        config's ``flow_prediction`` is "sample": the head then predicts the clean latent and
        the velocity is derived from it and x_t. ``rows`` is the latent grid's height (``None``:
        a square grid), so that the P tokens of a non-square image unfold onto its grid.
        """
        m, cell = self.model, self.config.token_merge
        p = image_hidden.shape[1]
        grid = math.isqrt(p) * cell if rows is None else rows
        te1, te2 = m.time_embed(t, self.dtype)
        device = image_hidden.device
        sem = m.gen_projector(image_hidden, te1, torch.arange(p, device=device))
        low = unmerge_tokens(sem, grid, cell)
        high = patch_embeds.to(low.dtype) if self.config.detail_injection else None
        gated = m.hi_gate(low, high)
        if cell == 2:
            # The reference tiles the detail head's RoPE positions 0..2P-1 twice over its 4P
            # tokens.
            positions = torch.arange(2 * p, device=device).repeat(2)
        else:
            positions = torch.arange(low.shape[1], device=device)
        detail = m.hi_projector(gated, te2, positions)
        velocity = tokens_to_feature_map(detail, grid)
        prediction = self.config.flow_prediction
        if prediction != "velocity":
            if x_t is None:
                raise ValueError(
                    f"this model's head output needs x_t (flow_prediction = {prediction!r}): "
                    "pass x_t to velocity() so that the velocity can be derived"
                )
            t_map = t[:, None, None, None]
            velocity = velocity_from_head(velocity, x_t.to(velocity.dtype), t_map, prediction)
        return Velocity(
            velocity=velocity,
            t_emb_1=te1,
            t_emb_2=te2,
            gen_proj_out=sem,
            hi_gate_low=low,
            hi_gate_out=gated,
            hi_proj_out=detail,
        )
