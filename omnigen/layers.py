"""Building blocks of the OmniGen transformer: Phi-3 decoder layers, rotary embeddings, embedders.

Parameter names follow the official OmniGen-v1 checkpoint so that `model.safetensors` loads as is.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class RMSNorm(nn.Module):
    """Phi-3 RMSNorm: the variance is computed in fp32 whatever the weights' dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    """Phi-3 rotary embedding with optional 'su'/'longrope' short and long frequency factors.

    Unlike the diffusers port, cos/sin are computed per row, and the short or long factors are chosen
    per row from that row's real length (largest position + 1), as the official pipeline does when it
    runs each guidance branch alone.
    """

    def __init__(self, head_dim: int, base: float, rope_scaling: dict | None,
                 max_position_embeddings: int, original_max_position_embeddings: int):
        super().__init__()
        # Plain Python numbers, not buffers: a model built on the meta device stays usable after loading.
        self.head_dim, self.base = head_dim, float(base)
        scaling_type = (rope_scaling or {}).get("type", (rope_scaling or {}).get("rope_type"))
        self.short_factor = self.long_factor = None
        if rope_scaling and scaling_type in ("su", "longrope"):
            self.short_factor = [float(f) for f in rope_scaling["short_factor"]]
            self.long_factor = [float(f) for f in rope_scaling["long_factor"]]
            if len(self.short_factor) != head_dim // 2 or len(self.long_factor) != head_dim // 2:
                raise ValueError(f"rope_scaling factors must have head_dim/2 = {head_dim // 2} entries, got "
                                 f"{len(self.short_factor)} short and {len(self.long_factor)} long")
        elif rope_scaling and scaling_type not in (None, "default"):
            raise ValueError(f"rope_scaling type {scaling_type!r} is not supported (use 'su'/'longrope' or none)")
        self.original_max_position_embeddings = original_max_position_embeddings
        scale = max_position_embeddings / original_max_position_embeddings
        self.attention_factor = (1.0 if self.short_factor is None or scale <= 1.0 else
                                 math.sqrt(1 + math.log(scale) / math.log(original_max_position_embeddings)))

    def forward(self, position_ids: torch.Tensor, row_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (B, 1, L, head_dim) in fp32; `row_lengths` (B,) picks short/long factors."""
        device = position_ids.device
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        inv_freq = (1.0 / self.base ** exponents)[None].expand(position_ids.shape[0], -1)
        if self.short_factor is not None:
            short = torch.tensor(self.short_factor, dtype=torch.float32, device=device)
            long = torch.tensor(self.long_factor, dtype=torch.float32, device=device)
            use_long = (row_lengths > self.original_max_position_embeddings)[:, None]
            inv_freq = inv_freq / torch.where(use_long, long[None], short[None])
        freqs = position_ids[:, :, None].float() * inv_freq[:, None, :]  # (B, L, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        return emb.cos() * self.attention_factor, emb.sin() * self.attention_factor


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    return (x * cos + rotate_half(x) * sin).to(dtype)


class Attention(nn.Module):
    """Phi-3 self-attention with a fused qkv projection, grouped-query heads and a condition KV cache."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = nn.Linear(hidden_size, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                past: tuple[torch.Tensor, torch.Tensor] | None = None, keep: int = 0
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """`past` holds cached keys/values of earlier tokens; `keep` > 0 returns those of the first `keep` tokens."""
        b, n, _ = x.shape
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0].to(k.device, k.dtype), k], dim=2)
            v = torch.cat([past[1].to(v.device, v.dtype), v], dim=2)
        # A compact copy: a slice would keep the whole sequence's keys/values alive as long as the cache.
        new_cache = (k[:, :, :keep].clone(memory_format=torch.contiguous_format),
                     v[:, :, :keep].clone(memory_format=torch.contiguous_format)) if keep else None
        if self.num_kv_heads != self.num_heads:
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 training on a CPU: autocast would run attention in bf16, whose backward is ~6x slower than
            # fp32's on this CPU build (the AMX gain is in the linear layers; benchmarks/bench_train.py).
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, q_size)), new_cache


class MLP(nn.Module):
    """Phi-3 SwiGLU feed-forward with a fused gate/up projection."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(up * F.silu(gate))


class DecoderLayer(nn.Module):
    """One pre-norm Phi-3 decoder layer: attention then SwiGLU, each with a residual."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, intermediate_size: int, eps: float):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden_size, eps)
        self.self_attn = Attention(hidden_size, num_heads, num_kv_heads)
        self.post_attention_layernorm = RMSNorm(hidden_size, eps)
        self.mlp = MLP(hidden_size, intermediate_size)

    def forward(self, x, mask, rope, past=None, keep=0):
        attn, cache = self.self_attn(self.input_layernorm(x), mask, rope, past, keep)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, cache


class Decoder(nn.Module):
    """The Phi-3 language model body (`llm.*` in the checkpoint): token embeddings, layers, final norm."""

    def __init__(self, cfg):
        super().__init__()
        # Given storage, nn.Embedding skips its own init (OmniGen.reset_parameters does it): on the meta device
        # that init zeroes the padding row through torch's Python decompositions, ~2.5 s of imports per load.
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(
            DecoderLayer(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                         cfg.intermediate_size, cfg.rms_norm_eps)
            for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of t in [0, 1] followed by a two-layer MLP (the DiT embedder)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size, bias=True), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size, bias=True))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(self.sinusoid(t, self.frequency_embedding_size).to(dtype))


class PatchEmbed(nn.Module):
    """Latent (B, C, H, W) -> tokens (B, H/p * W/p, hidden) with a strided convolution."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens back to latent patches."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = self.norm_final(x) * (1 + scale[:, None]) + shift[:, None]
        return self.linear(x)


def sincos_pos_embed_2d(dim: int, grid_size: int, base_size: int = 64) -> np.ndarray:
    """The SD3/OmniGen 2-D sin-cos table, (grid_size**2, dim); positions scaled by base_size/grid_size."""
    coords = np.arange(grid_size, dtype=np.float64) / (grid_size / base_size)
    column, row = np.meshgrid(coords, coords)

    def embed_1d(pos: np.ndarray, d: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # The reference puts the column coordinate in the first half of the channels.
    return np.concatenate([embed_1d(column, dim // 2), embed_1d(row, dim // 2)], axis=1)
