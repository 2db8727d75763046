"""The rectified-flow training objective, with the OmniGen paper's loss weighting for edits.

Time t runs from 0 (noise) to 1 (data): x_t = t*x1 + (1-t)*x0 with x0 ~ N(0, I), x1 the data latents,
t = sigmoid(N(0, 1)) per sample, and the model regresses the velocity v = x1 - x0 (mean squared error).

Edit weighting (paper, section 2.3): in an edit most of the target equals the input, and a model that
copies its input already has a low loss. For a sample with exactly one input image of the output's
size, positions whose latent changed (mean over channels of |z_in - z_out| above a threshold) weigh
1 + amplification, others 1, normalised so the sample's mean weight is 1. A sample whose target is
its input unchanged teaches only copying and weighs 0.
"""

from __future__ import annotations

import torch

# Latents of the same pixels may differ by float noise (batched convolutions); below this they are equal.
IDENTICAL_TOLERANCE = 1e-4


def sample_timesteps(batch_size: int, generator: torch.Generator | None = None, location: float = 0.0) -> torch.Tensor:
    """t = sigmoid(u), u ~ N(location, 1): with location 0 most samples sit at middling noise levels, as in the
    paper (and SD3); a negative location moves them towards noise, where a picture's layout is decided."""
    return torch.sigmoid(torch.randn(batch_size, generator=generator) + location)


def noisy_latents(x1: torch.Tensor, generator: torch.Generator | None = None,
                  location: float = 0.0) -> dict[str, torch.Tensor]:
    """{"x_t", "t", "target"} for data latents x1 (B, C, H, W); randomness drawn on the CPU so every device
    (and a resumed run) sees the same numbers for the same generator state."""
    t = sample_timesteps(x1.shape[0], generator, location).to(x1.device)
    x0 = torch.randn(x1.shape, generator=generator).to(x1.device, x1.dtype)
    t_ = t.view(-1, 1, 1, 1).to(x1.dtype)
    return {"x_t": t_ * x1 + (1 - t_) * x0, "t": t, "target": x1 - x0}


def edit_weight_map(input_latent: torch.Tensor, output_latent: torch.Tensor, threshold: float = 0.1,
                    amplification: float = 4.0) -> torch.Tensor:
    """Per-position loss weights (h, w) of an edit from its input and target latents (C, h, w).

    Changed positions (mean |z_in - z_out| over channels > threshold) weigh 1 + amplification, the rest
    1, scaled so the mean is 1; an unchanged target gives all zeros.
    """
    if input_latent.shape != output_latent.shape:
        raise ValueError(f"edit weighting needs input and output latents of one shape, got "
                         f"{tuple(input_latent.shape)} and {tuple(output_latent.shape)}")
    difference = (input_latent.float() - output_latent.float()).abs().mean(dim=0)
    if difference.max() <= IDENTICAL_TOLERANCE:
        return torch.zeros_like(difference)
    weights = 1.0 + amplification * (difference > threshold).float()
    return weights / weights.mean()


def batch_loss_weights(output_latents: torch.Tensor, edit_input_latents: list[torch.Tensor | None],
                       threshold: float, amplification: float) -> torch.Tensor:
    """(B, 1, H, W) weights: an edit map for rows with an aligned input latent, ones for the others."""
    weights = torch.ones(output_latents.shape[0], 1, *output_latents.shape[-2:], device=output_latents.device)
    for row, input_latent in enumerate(edit_input_latents):
        if input_latent is not None:
            weights[row, 0] = edit_weight_map(input_latent, output_latents[row], threshold, amplification)
    return weights


def flow_matching_loss(velocity: torch.Tensor, target: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the predicted velocity, in fp32, optionally weighted per position."""
    squared_error = (velocity.float() - target.float()) ** 2
    if weights is not None:
        squared_error = squared_error * weights.float()
    return squared_error.mean()
