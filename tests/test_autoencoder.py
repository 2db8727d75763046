"""The mini VAE: its config, a short training run, the saved folder, and resuming from a checkpoint."""

import json
import random
import shutil

import pytest
import torch
from PIL import Image, ImageDraw

from omnigen import vae as vae_io
from omnigen.mini.autoencoder import build_vae, decoder_samples, images_to_pixels, reconstruction_psnr, vae_config
from omnigen.mini.vae_training import finetune_decoder, train_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Small enough that a training step takes milliseconds: 32x32 pictures, 4x4 latents.
SIZE = 32
TINY = dict(latent_channels=4, widths=(8, 8, 16, 16), pool_size=64, batch_size=8, sample_size=SIZE)
COLOURS = [(230, 30, 30), (20, 40, 200), (60, 190, 70), (240, 220, 30), (255, 255, 255), (60, 60, 60)]


def rectangles(rng: random.Random, n: int) -> list[Image.Image]:
    """Flat-coloured rectangles on a flat background, the simplest pictures of the mini world's kind."""
    images = []
    for _ in range(n):
        background, colour = rng.sample(COLOURS, 2)
        image = Image.new("RGB", (SIZE, SIZE), background)
        x0, y0 = rng.randrange(0, SIZE // 2), rng.randrange(0, SIZE // 2)
        ImageDraw.Draw(image).rectangle([x0, y0, x0 + rng.randrange(4, 12), y0 + rng.randrange(4, 12)], fill=colour)
        images.append(image)
    return images


def test_config_builds_a_factor_8_autoencoder():
    config = vae_config(latent_channels=8, widths=(32, 64, 64, 64))
    assert config["block_out_channels"] == [32, 64, 64, 64] and config["layers_per_block"] == 1
    assert all(w % config["norm_num_groups"] == 0 for w in config["block_out_channels"])
    vae = build_vae(config).eval()
    assert vae_io.spatial_factor(vae) == 8
    with torch.no_grad():
        latents = vae.encode(torch.zeros(2, 3, 64, 64)).latent_dist.mode()
        assert latents.shape == (2, 8, 8, 8)
        assert vae.decode(latents).sample.shape == (2, 3, 64, 64)


@pytest.mark.parametrize("widths", [(32, 64, 64), (32, 64, 64, 64, 64)])
def test_config_rejects_other_factors(widths):
    with pytest.raises(ValueError, match="spatial factor 8"):
        vae_config(widths=widths)


@pytest.mark.slow
def test_training_lowers_the_loss_and_saves_a_loadable_vae(tmp_path):
    metrics = train_vae(rectangles, tmp_path, steps=60, lr=3e-3, log_every=1, checkpoint_every=30, **TINY)
    losses = [logs["loss"] for logs in metrics["history"]]
    assert metrics["steps"] == 60 and len(losses) == 60
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10])

    vae = vae_io.load_vae(tmp_path)
    assert vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"]) != 1.0
    assert vae.config.shift_factor == pytest.approx(metrics["shift_factor"]) != 0.0
    assert json.loads((tmp_path / "vae_training.json").read_text())["psnr"] == metrics["psnr"]

    images = rectangles(random.Random(1), 64)
    latents = vae_io.encode(vae, images_to_pixels(images), sample=False)
    assert abs(float(latents.mean())) < 0.5 and 0.5 < float(latents.std()) < 2.0  # the scale/shift normalise
    untrained = build_vae(vae_config(TINY["latent_channels"], TINY["widths"], SIZE)).eval()
    assert reconstruction_psnr(vae, images) > reconstruction_psnr(untrained, images) + 2


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_exactly(tmp_path):
    settings = dict(steps=12, checkpoint_every=6, log_every=1, seed=3, **TINY)
    straight = train_vae(rectangles, tmp_path / "straight", **settings)

    def crash_after_step_9(logs):
        if logs["step"] == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_vae(rectangles, tmp_path / "resumed", callback=crash_after_step_9, **settings)
    seen = []
    resumed = train_vae(rectangles, tmp_path / "resumed", callback=lambda logs: seen.append(logs["step"]), **settings)
    assert seen == list(range(7, 13))  # picked up after the step-6 checkpoint
    assert resumed["steps"] == 12 and [h["step"] for h in resumed["history"]] == list(range(1, 13))
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]], rel=1e-4)

    a, b = vae_io.load_vae(tmp_path / "straight").state_dict(), vae_io.load_vae(tmp_path / "resumed").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    train_vae(rectangles, tmp_path, steps=2, checkpoint_every=1, **TINY)
    with pytest.raises(ValueError, match="another VAE config"):
        train_vae(rectangles, tmp_path, steps=4, **{**TINY, "latent_channels": 8})


def test_wrong_image_size_is_reported(tmp_path):
    with pytest.raises(ValueError, match="48x48"):
        train_vae(lambda rng, n: [Image.new("RGB", (48, 48))] * n, tmp_path, steps=1, **TINY)


@pytest.mark.slow
def test_decoder_finetuning_changes_only_the_decoder_and_lowers_its_error(tmp_path):
    train_vae(rectangles, tmp_path, steps=20, lr=3e-3, **TINY)
    before = vae_io.load_vae(tmp_path)
    images = rectangles(random.Random(5), 64)
    metrics = finetune_decoder(tmp_path, rectangles, steps=40, batch_size=8, lr=3e-3, pool_size=64, device="cpu")
    after = vae_io.load_vae(tmp_path)
    assert metrics["steps"] == 40
    encoder = [k for k in before.state_dict() if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before.state_dict() if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in encoder)
    assert any(not torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in decoder)
    assert reconstruction_psnr(after, images) > reconstruction_psnr(before, images) + 0.5
    assert after.config.scaling_factor == before.config.scaling_factor  # the latent space is the same


@pytest.mark.slow
def test_decoder_finetuning_resumes_exactly_and_is_not_repeated(tmp_path):
    train_vae(rectangles, tmp_path / "base", steps=10, lr=3e-3, **TINY)
    for name in ("straight", "resumed"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    settings = dict(steps=8, batch_size=8, lr=3e-3, pool_size=64, checkpoint_every=4, log_every=1)
    straight_losses = []
    finetune_decoder(tmp_path / "straight", rectangles, callback=lambda logs: straight_losses.append(logs["loss"]),
                     **settings)

    def crash_after_step_6(logs):
        if logs["step"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_decoder(tmp_path / "resumed", rectangles, callback=crash_after_step_6, **settings)
    seen = []
    resumed = finetune_decoder(tmp_path / "resumed", rectangles, callback=lambda logs: seen.append(logs), **settings)
    assert [logs["step"] for logs in seen] == [5, 6, 7, 8]  # picked up after the step-4 checkpoint
    assert [logs["loss"] for logs in seen] == pytest.approx(straight_losses[4:], rel=1e-4)
    a, b = vae_io.load_vae(tmp_path / "straight").state_dict(), vae_io.load_vae(tmp_path / "resumed").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    files = tmp_path / "resumed" / "vae" / "diffusion_pytorch_model.safetensors"
    written = files.stat().st_mtime_ns
    again = finetune_decoder(tmp_path / "resumed", rectangles, callback=lambda logs: pytest.fail("trained again"),
                             **settings)
    assert again == resumed and files.stat().st_mtime_ns == written
    with pytest.raises(ValueError, match="other settings"):
        finetune_decoder(tmp_path / "resumed", rectangles, **{**settings, "lr": 1e-3})


def test_decoder_pool_draws_every_family_and_the_held_out_pairs():
    from omnigen.mini.tasks import FAMILIES, HELDOUT_FAMILIES

    samples = decoder_samples(random.Random(0), 400)
    assert {s.family for s in samples} == set(FAMILIES)
    assert all(s.output_image.size == (64, 64) for s in samples)
    splits = {(s.family, s.spec["split"]) for s in samples}
    assert {(family, "heldout") for family in HELDOUT_FAMILIES} <= splits
    assert [s.instruction for s in decoder_samples(random.Random(0), 20)] == [s.instruction for s in samples[:20]]
