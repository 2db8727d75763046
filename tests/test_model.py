"""The transformer against diffusers' port, the KV cache against a full forward, the official key layout."""

from pathlib import Path

import pytest
import torch

from omnigen.mini.recipe import expand_depth
from omnigen.model import OmniGen, OmniGenConfig
from omnigen.layouts import official_config_to_diffusers, official_to_diffusers

REFERENCE_TSV = Path(__file__).resolve().parent / "data" / "omnigen-v1-state-dict.tsv"  # from shared/reference


def tiny_config(**overrides) -> OmniGenConfig:
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=128, vocab_size=120, pad_token_id=0, pos_embed_max_size=16,
                max_position_embeddings=4096, original_max_position_embeddings=4096)
    base.update(overrides)
    return OmniGenConfig(**base)


def su_scaling(head_dim: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"type": "su", "short_factor": (1 + torch.rand(head_dim // 2, generator=g)).tolist(),
            "long_factor": (1 + 4 * torch.rand(head_dim // 2, generator=g)).tolist()}


def randomise(model: OmniGen, seed: int = 0, scale: float = 0.1) -> OmniGen:
    """Random weights everywhere (zero-initialised output layers would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def diffusers_twin(model: OmniGen):
    from diffusers import OmniGenTransformer2DModel
    cfg = official_config_to_diffusers(model.config)
    cfg.pop("_class_name"), cfg.pop("native_image_size")
    if cfg["rope_scaling"] is None:  # diffusers requires factors; ones are plain RoPE
        half = model.config.hidden_size // model.config.num_attention_heads // 2
        cfg["rope_scaling"] = {"short_factor": [1.0] * half, "long_factor": [1.0] * half}
    twin = OmniGenTransformer2DModel(**cfg)
    twin.load_state_dict(official_to_diffusers(model.state_dict(), model.config), strict=True)
    return twin.eval()


def build_row(text_len: int, image_sizes: list[tuple[int, int]], n_out: int, seed: int, vocab: int):
    """One unpadded row in the official format: token ids with image slots, spans, mask, positions."""
    g = torch.Generator().manual_seed(seed)
    ids, spans = [], []
    per_chunk = text_len // (len(image_sizes) + 1)
    for h, w in image_sizes:
        ids += torch.randint(1, vocab, (per_chunk,), generator=g).tolist()
        spans.append((len(ids), len(ids) + (h // 2) * (w // 2)))
        ids += [0] * ((h // 2) * (w // 2))
    ids += torch.randint(1, vocab, (text_len - per_chunk * len(image_sizes),), generator=g).tolist()
    return ids, spans


def build_batch(rows, n_out: int, pad_id: int = 0):
    """Left-pad rows; mask and positions as the official collator builds them."""
    lc = max(len(ids) for ids, _ in rows)
    total = lc + 1 + n_out
    input_ids, masks, positions, spans_by_row = [], [], [], {}
    for b, (ids, spans) in enumerate(rows):
        pad, real = lc - len(ids), len(ids)
        input_ids.append([pad_id] * pad + ids)
        m = torch.zeros(total, total, dtype=torch.bool)
        m[pad:, pad:pad + real + 1] = torch.tril(torch.ones(real + 1 + n_out, real + 1, dtype=torch.bool))
        m[pad + real + 1:, pad:] = True
        m[:pad, :] = True
        for s, e in spans:
            m[pad + s:pad + e, pad + s:pad + e] = True
        masks.append(m)
        positions.append([0] * pad + list(range(real + 1 + n_out)))
        if spans:
            spans_by_row[b] = [(s + pad, e + pad) for s, e in spans]
    return (torch.tensor(input_ids), torch.stack(masks), torch.tensor(positions), spans_by_row)


def make_inputs(model, row_specs, out_hw=(8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config.in_channels
    rows, latents = [], []
    for i, (text_len, sizes) in enumerate(row_specs):
        rows.append(build_row(text_len, sizes, 0, seed + i, model.config.vocab_size))
        latents.append([torch.randn(1, c, h, w, generator=g) for h, w in sizes])
    n_out = (out_hw[0] // 2) * (out_hw[1] // 2)
    x = torch.randn(len(rows), c, *out_hw, generator=g)
    t = torch.rand(len(rows), generator=g)
    return rows, latents, n_out, x, t


def run_ours(model, rows, latents, n_out, x, t):
    input_ids, mask, pos, spans = build_batch(rows, n_out, model.config.pad_token_id)
    flat = [lat for row in latents for lat in row]
    out, _ = model(x, t, input_ids, flat, spans, mask, pos)
    return out


def run_diffusers_alone(twin, rows, latents, n_out, x, t):
    """diffusers on each row by itself (no padding): the correct reference for every row."""
    outs = []
    for b, (row, lats) in enumerate(zip(rows, latents)):
        input_ids, mask, pos, spans = build_batch([row], n_out)
        out = twin(x[b:b + 1], t[b:b + 1], input_ids, lats, spans, mask.float(), pos).sample
        outs.append(out)
    return torch.cat(outs)


ROWS = [(7, []), (30, [(4, 6), (6, 4)]), (16, [(8, 8)])]


@torch.no_grad()
def test_parity_with_diffusers_on_padded_batch_with_images():
    model = randomise(OmniGen.from_config(tiny_config(rope_scaling=su_scaling(16))))
    twin = diffusers_twin(model)
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    ours = run_ours(model, rows, latents, n_out, x, t)
    reference = run_diffusers_alone(twin, rows, latents, n_out, x, t)
    diff = (ours - reference).abs().max().item()
    print(f"parity, padded batch with 3 images: max abs diff {diff:.2e}")
    assert diff < 1e-5


@torch.no_grad()
def test_diffusers_batched_is_wrong_for_rows_padded_unlike_row_0():
    """diffusers shares row 0's cos/sin across the batch; here every row gets its own."""
    model = randomise(OmniGen.from_config(tiny_config()), scale=0.3)  # sharp attention shows the error
    twin = diffusers_twin(model)
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    input_ids, mask, pos, spans = build_batch(rows, n_out)
    batched = twin(x, t, input_ids, [l for r in latents for l in r], spans, mask.float(), pos).sample
    reference = run_diffusers_alone(twin, rows, latents, n_out, x, t)
    ours = run_ours(model, rows, latents, n_out, x, t)
    right = (batched[0] - reference[0]).abs().max().item()  # row 0's own cos/sin: right for row 0 ...
    wrong = (batched[1] - reference[1]).abs().max().item()  # ... wrong for the unpadded row 1
    print(f"diffusers batched: row 0 off by {right:.1e}, row 1 off by {wrong:.1e}")
    assert wrong > 1e-2 and wrong > 100 * right
    assert (ours - reference).abs().max() <= 2 * right + 1e-6  # ours: every row as right as row 0


@torch.no_grad()
def test_parity_with_long_rope_factors_chosen_per_row():
    # original_max 40: the 30-token text row plus image tokens exceeds it, the 7-token row does not.
    cfg = tiny_config(rope_scaling=su_scaling(16, seed=3), max_position_embeddings=160,
                      original_max_position_embeddings=40)
    model = randomise(OmniGen.from_config(cfg), seed=1)
    twin = diffusers_twin(model)
    rows, latents, n_out, x, t = make_inputs(model, ROWS, seed=5)
    lengths = [len(ids) + 1 + n_out for ids, _ in rows]
    assert min(lengths) <= 40 < max(lengths)
    ours = run_ours(model, rows, latents, n_out, x, t)
    reference = run_diffusers_alone(twin, rows, latents, n_out, x, t)
    diff = (ours - reference).abs().max().item()
    print(f"parity, long factor in use for some rows: max abs diff {diff:.2e}")
    assert diff < 1e-5
    # And the long factor really changes the result (the test would be blind otherwise).
    short_only = OmniGen.from_config(tiny_config(rope_scaling={**cfg.rope_scaling, "long_factor": cfg.rope_scaling["short_factor"]},
                                                 max_position_embeddings=160, original_max_position_embeddings=40))
    short_only.load_state_dict(model.state_dict())
    assert (run_ours(short_only.eval(), rows, latents, n_out, x, t) - ours).abs().max() > 1e-4


@torch.no_grad()
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_kv_cache_matches_full_forward_including_first_step(kv_heads):
    model = randomise(OmniGen.from_config(tiny_config(num_key_value_heads=kv_heads, rope_scaling=su_scaling(16))))
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    input_ids, mask, pos, spans = build_batch(rows, n_out)
    flat = [l for r in latents for l in r]
    full, no_cache = model(x, t, input_ids, flat, spans, mask, pos)
    first, cache = model(x, t, input_ids, flat, spans, mask, pos, use_cache=True)
    assert no_cache is None and len(cache) == model.config.num_hidden_layers
    assert cache[0][0].shape[2] == input_ids.shape[1]
    assert (first - full).abs().max() < 1e-5  # the first step sees the image tokens, unlike OmniGen#196
    x2, t2 = torch.randn_like(x), torch.rand(len(rows))
    full2, _ = model(x2, t2, input_ids, flat, spans, mask, pos)
    cached2, _ = model(x2, t2, attention_mask=mask, position_ids=pos, past_key_values=cache)
    diff = (cached2 - full2).abs().max().item()
    print(f"kv cache vs full forward: max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomise(OmniGen.from_config(tiny_config())).train()
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.enable_gradient_checkpointing(enabled)
        run_ours(model, rows, latents, n_out, x, t).square().mean().backward()
        grads.append(model.llm.layers[0].self_attn.qkv_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_autocast_on_cpu_keeps_attention_in_fp32(monkeypatch):
    """Under CPU autocast the linear layers run in bf16 but attention in fp32 (its bf16 backward is slow)."""
    import omnigen.layers as layers

    model = randomise(OmniGen.from_config(tiny_config())).train()
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    reference = run_ours(model, rows, latents, n_out, x, t)
    seen, sdpa = [], layers.F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", recording)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run_ours(model, rows, latents, n_out, x, t)
        assert model.llm.layers[0].self_attn.qkv_proj(x.new_ones(1, 64)).dtype == torch.bfloat16
    assert seen and set(seen) == {(torch.float32,) * 3}
    mixed.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in model.llm.parameters() if p.requires_grad)
    error = (mixed.float() - reference).abs().max().item() / reference.abs().max().item()
    assert error < 0.05, f"bf16 autocast strays {error:.3f} from fp32"


def test_full_config_on_meta_matches_the_official_checkpoint_layout():
    expected = {}
    for line in REFERENCE_TSV.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t"):
            continue
        key, shape = line.split("\t")[:2]
        expected[key] = tuple(int(s) for s in shape.split("x"))
    v1 = OmniGenConfig(hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       intermediate_size=8192, vocab_size=32064, pad_token_id=32000)
    with torch.device("meta"):
        model = OmniGen.from_config(v1)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert sum(v.numel() for v in model.state_dict().values()) == 3875318800


def test_pos_embed_table_matches_diffusers():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed
    model = OmniGen.from_config(tiny_config())
    ref = get_2d_sincos_pos_embed(64, 16, base_size=64, output_type="pt").float()
    assert torch.allclose(model.pos_embed[0], ref, atol=1e-6)


@pytest.mark.parametrize("layers, copies_after", [(3, [1]), (4, [0, 1]), (7, [0, 0, 1, 1, 1])])
def test_expand_depth_keeps_the_function_and_the_new_layers_learn(layers, copies_after):
    model = randomise(OmniGen.from_config(tiny_config()))
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    with torch.no_grad():
        before = run_ours(model, rows, latents, n_out, x, t)
    old = list(model.llm.layers)
    expand_depth(model, layers)
    grown = list(model.llm.layers)
    assert len(grown) == model.config.num_hidden_layers == layers
    new = [i for i, layer in enumerate(grown) if not any(layer is o for o in old)]
    # Each copy follows the layer it was copied from (copies_after: the old layer before each new one).
    assert [old.index(next(l for l in reversed(grown[:i]) if any(l is o for o in old))) for i in new] == copies_after
    for i in new:
        assert grown[i].self_attn.o_proj.weight.abs().max() == 0 and grown[i].mlp.down_proj.weight.abs().max() == 0
        assert torch.equal(grown[i].self_attn.qkv_proj.weight, old[copies_after[new.index(i)]].self_attn.qkv_proj.weight)
    with torch.no_grad():
        after = run_ours(model, rows, latents, n_out, x, t)
    assert torch.equal(before, after)

    # Training moves the zeroed projections, and then the new layer changes the output.
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        optimiser.zero_grad()
        run_ours(model, rows, latents, n_out, x, t).square().mean().backward()
        optimiser.step()
    assert all(grown[i].self_attn.o_proj.weight.abs().max() > 0 for i in new)
    assert all(grown[i].self_attn.qkv_proj.weight.grad.abs().max() > 0 for i in new)


def test_expand_depth_refuses_to_drop_layers():
    model = OmniGen.from_config(tiny_config(num_hidden_layers=3))
    with pytest.raises(ValueError, match="3-layer model to 2 layers"):
        expand_depth(model, 2)
    assert expand_depth(model, 3) is model and len(model.llm.layers) == 3
