"""The OmniGen transformer: a Phi-3 decoder over [condition tokens][time token][output image tokens].

Condition tokens are text embeddings with input-image latents spliced into their placeholder slots.
The network predicts the rectified-flow velocity of the output latents.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import (Decoder, FinalLayer, KVCache, PatchEmbed, RotaryEmbedding, TimestepEmbedder,
                     sincos_pos_embed_2d)


@dataclass
class OmniGenConfig:
    """The Phi-3 style `config.json` of a model folder, plus the few OmniGen keys it may state."""

    hidden_size: int = 3072
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    intermediate_size: int = 8192
    vocab_size: int = 32064
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    pad_token_id: int | None = 32000
    # OmniGen keys; OmniGen-v1's config.json states none of them and gets these defaults.
    patch_size: int = 2
    in_channels: int = 4
    pos_embed_max_size: int = 192
    native_image_size: int = 1024
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")

    @classmethod
    def from_dict(cls, data: dict) -> "OmniGenConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
        return cls(**kwargs, extra={**data.get("extra", {}), **extra})

    @classmethod
    def load(cls, config: "str | os.PathLike | dict | OmniGenConfig") -> "OmniGenConfig":
        if isinstance(config, OmniGenConfig):
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}


class OmniGen(nn.Module):
    """The OmniGen transformer with the official checkpoint's parameter names."""

    def __init__(self, config: OmniGenConfig):
        super().__init__()
        self.config = cfg = config
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, cfg.hidden_size)
        self.input_x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, cfg.hidden_size)
        self.time_token = TimestepEmbedder(cfg.hidden_size)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.final_layer = FinalLayer(cfg.hidden_size, cfg.patch_size, cfg.in_channels)
        self.llm = Decoder(cfg)
        self.rope = RotaryEmbedding(cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta, cfg.rope_scaling,
                                    cfg.max_position_embeddings, cfg.original_max_position_embeddings)
        grid = cfg.pos_embed_max_size
        self.register_buffer("pos_embed", torch.empty(1, grid * grid, cfg.hidden_size), persistent=True)
        self.gradient_checkpointing = False

    @classmethod
    def from_config(cls, config: "str | os.PathLike | dict | OmniGenConfig") -> "OmniGen":
        """Build on the current default device; under `torch.device("meta")` nothing is allocated."""
        model = cls(OmniGenConfig.load(config))
        if model.pos_embed.device.type != "meta":
            model.reset_parameters()
        return model

    def reset_parameters(self) -> None:
        """Random initialisation for training from scratch (Phi-3 normal(0.02); DiT zero-init output)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
        for linear in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.pos_embed.copy_(self.build_pos_embed())

    def build_pos_embed(self) -> torch.Tensor:
        table = sincos_pos_embed_2d(self.config.hidden_size, self.config.pos_embed_max_size)
        return torch.from_numpy(table).float()[None]

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    def cropped_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """The centre crop of the sin-cos table for a latent of height x width: (1, h*w/p^2, hidden)."""
        p, grid = self.config.patch_size, self.config.pos_embed_max_size
        h, w = height // p, width // p
        if h > grid or w > grid:
            raise ValueError(f"a latent of {height}x{width} needs {h}x{w} patches, more than this model's "
                             f"{grid}x{grid} position table: use a smaller image size")
        top, left = (grid - h) // 2, (grid - w) // 2
        table = self.pos_embed.view(1, grid, grid, -1)[:, top:top + h, left:left + w]
        return table.reshape(1, h * w, -1)

    def embed_image(self, latents: torch.Tensor, is_input: bool) -> torch.Tensor:
        embedder = self.input_x_embedder if is_input else self.x_embedder
        tokens = embedder(latents.to(self.dtype))
        return tokens + self.cropped_pos_embed(*latents.shape[-2:]).to(tokens.dtype)

    def embed_condition(self, input_ids: torch.Tensor, input_img_latents: list[torch.Tensor] | None,
                        input_image_sizes: dict[int, list[tuple[int, int]]] | None) -> torch.Tensor:
        """Text embeddings with each input image's tokens written into its placeholder span."""
        embeds = self.llm.embed_tokens(input_ids)
        if not input_img_latents:
            return embeds
        spans = [(row, start, end) for row, row_spans in (input_image_sizes or {}).items()
                 for start, end in row_spans]
        if len(spans) != len(input_img_latents):
            raise ValueError(f"{len(input_img_latents)} input image latents for {len(spans)} image spans")
        for (row, start, end), latent in zip(spans, input_img_latents):
            tokens = self.embed_image(latent, is_input=True)[0]
            if tokens.shape[0] != end - start:
                raise ValueError(f"an input image of {tokens.shape[0]} tokens does not fit span [{start}, {end})")
            embeds[row, start:end] = tokens.to(embeds.dtype)
        return embeds

    def unpatchify(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        p, c = self.config.patch_size, self.config.in_channels
        b, h, w = tokens.shape[0], height // p, width // p
        x = tokens.reshape(b, h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, height, width)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, input_ids: torch.Tensor | None = None,
                input_img_latents: list[torch.Tensor] | None = None,
                input_image_sizes: dict[int, list[tuple[int, int]]] | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                ) -> tuple[torch.Tensor, KVCache | None]:
        """Velocity for latents `x` (B, C, H, W) at times `timestep` (B,) in [0, 1].

        `attention_mask` (B, L, L) bool and `position_ids` (B, L) always describe the whole sequence
        [condition][time][image]. With `past_key_values` (the condition's cached keys/values) only the
        time and image tokens are run. With `use_cache` and no cache yet, the whole sequence is run —
        exactly as without a cache — and the condition's keys/values are returned for later steps.
        """
        batch, _, height, width = x.shape
        dtype = self.dtype
        timestep = timestep.to(x.device).expand(batch) if timestep.dim() else timestep.to(x.device).repeat(batch)
        image_tokens = self.embed_image(x, is_input=False)
        num_image_tokens = image_tokens.shape[1]
        time_token = self.time_token(timestep, dtype)[:, None]
        time_emb = self.t_embedder(timestep, dtype)

        keep = 0
        if past_key_values is not None:
            hidden = torch.cat([time_token, image_tokens], dim=1)
        elif input_ids is not None and input_ids.shape[1] > 0:
            condition = self.embed_condition(input_ids, input_img_latents, input_image_sizes)
            hidden = torch.cat([condition, time_token, image_tokens], dim=1)
            keep = condition.shape[1] if use_cache else 0
        else:
            hidden = torch.cat([time_token, image_tokens], dim=1)

        total = hidden.shape[1] + (past_key_values[0][0].shape[2] if past_key_values is not None else 0)
        if position_ids is None:
            position_ids = torch.arange(total, device=x.device)[None].expand(batch, -1)
        if attention_mask is None:
            attention_mask = torch.ones(batch, total, total, dtype=torch.bool, device=x.device)
        if position_ids.shape[-1] != total or attention_mask.shape[-1] != total:
            raise ValueError(f"position_ids/attention_mask cover {position_ids.shape[-1]}/{attention_mask.shape[-1]} "
                             f"tokens but the sequence has {total}")
        new = hidden.shape[1]
        row_lengths = position_ids.max(dim=1).values + 1
        rope = self.rope(position_ids[:, -new:], row_lengths)
        mask = attention_mask[:, None, -new:, :].to(torch.bool)

        cache: KVCache = []
        for i, layer in enumerate(self.llm.layers):
            past = past_key_values[i] if past_key_values is not None else None
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden, layer_cache = checkpoint(layer, hidden, mask, rope, past, keep, use_reentrant=False)
            else:
                hidden, layer_cache = layer(hidden, mask, rope, past, keep)
            if keep:
                cache.append(layer_cache)
        hidden = self.llm.norm(hidden)[:, -num_image_tokens:]
        out = self.final_layer(hidden, time_emb)
        return self.unpatchify(out, height, width), (cache if keep else None)
