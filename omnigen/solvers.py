"""Solvers of the rectified-flow ODE dx/dt = v(x, t) and the spacings of their times.

t runs from 0 (noise) to 1 (data) and x_t = t*x1 + (1-t)*x0, so at any point the data estimate is
x1 = x + (1-t)*v and the noise estimate x0 = x - t*v. A step function takes the velocity field
`field(x, t)`, the latents and the step's two times, and returns the next latents and the velocity the step
moved along on average, v_step = (x_next - x) / (t_next - t), from which the step callback's estimate of
the final latents x_next + (1 - t_next) * v_step is formed. A multistep solver keeps what it remembers of
earlier steps in `memory`, a dict that lives for one run.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Field = Callable[[torch.Tensor, float], torch.Tensor]  # (latents, t) -> velocity


def euler_step(field: Field, x: torch.Tensor, t: float, t_next: float, memory: dict,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """First order, one evaluation: x += (t_next - t) * v(x, t)."""
    v = field(x, t)
    return x + (t_next - t) * v, v


def heun_step(field: Field, x: torch.Tensor, t: float, t_next: float, memory: dict,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Heun's method (explicit trapezoid), second order, two evaluations: an Euler guess, then the mean of
    the velocities at both ends. It evaluates at t_next = 1 on the last step, where the model is defined."""
    v = field(x, t)
    v_end = field(x + (t_next - t) * v, t_next)
    v_mean = 0.5 * (v + v_end)
    return x + (t_next - t) * v_mean, v_mean


def midpoint_step(field: Field, x: torch.Tensor, t: float, t_next: float, memory: dict,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit midpoint method, second order, two evaluations: the velocity half a step ahead."""
    v = field(x, t)
    t_mid = 0.5 * (t + t_next)
    v_mid = field(x + (t_mid - t) * v, t_mid)
    return x + (t_next - t) * v_mid, v_mid


def log_snr(t: float) -> float:
    """lambda = log(alpha / sigma) = log(t / (1 - t)) for alpha = t, sigma = 1 - t; -inf at 0, inf at 1."""
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t / (1.0 - t))


def dpmpp_2m_step(field: Field, x: torch.Tensor, t: float, t_next: float, memory: dict,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver++(2M) in data form for flow matching, one evaluation per step.

    The ODE is semi-linear in x: dx/dt = (D - x) / (1 - t) with D = x + (1 - t) v the data estimate. The
    linear part is integrated exactly and D is taken linear in lambda = log(t / (1 - t)) through this step's
    and the previous step's estimates:
        x_next = (s_next / s) x + (t_next - t s_next / s) D',  s = 1 - t,  D' = (1 + 1/2r) D - (1/2r) D_prev,
    r = h_prev / h the ratio of the last two lambda steps (t_next - t s_next / s is alpha_next (1 - e^-h)).
    Where there is no usable previous estimate (the first step, the second one whose previous lambda is -inf)
    and on the last step (s_next = 0, h infinite) it is first order, which for flow is an Euler step.
    """
    v = field(x, t)
    data = x + (1.0 - t) * v
    lam, lam_next = log_snr(t), log_snr(t_next)
    previous, lam_previous = memory.get("data"), memory.get("lambda", -math.inf)
    memory.update(data=data, **{"lambda": lam})
    if t_next >= 1.0 or previous is None or not math.isfinite(lam_previous) or not math.isfinite(lam):
        return x + (t_next - t) * v, v
    ratio = (lam - lam_previous) / (lam_next - lam)
    corrected = (1.0 + 0.5 / ratio) * data - (0.5 / ratio) * previous
    keep = (1.0 - t_next) / (1.0 - t)
    x_next = keep * x + (t_next - t * keep) * corrected
    return x_next, (x_next - x) / (t_next - t)


Step = Callable[[Field, torch.Tensor, float, float, dict], tuple[torch.Tensor, torch.Tensor]]

# The names are GenerationSettings.sampler's choices; settings.SAMPLER_MIN_STEPS says how few steps each takes
# (2M has no second-order step below 3).
SAMPLERS: dict[str, Step] = {"euler": euler_step, "heun": heun_step, "midpoint": midpoint_step,
                             "dpmpp_2m": dpmpp_2m_step}


def get_sampler(name: str) -> Step:
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]


# ----------------------------------------------------------------------------- spacings of the times

SPACINGS = ("uniform", "sigmoid", "cosine")  # GenerationSettings.schedule's choices


def spaced_times(num_steps: int, spacing: str = "uniform") -> torch.Tensor:
    """num_steps + 1 times from 0 to 1 (float64), before any time shift.

    uniform: evenly spaced. sigmoid: t = sigmoid(z) at evenly spaced quantiles z of N(0, 1), the paper's
    training density of t, so steps are dense mid-way and coarse at both ends; a time shift s on top moves
    that normal's location by -log(s). cosine: t = (1 - cos(pi u)) / 2, dense at both ends.
    """
    u = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        return u
    if spacing == "sigmoid":
        return torch.sigmoid(torch.special.ndtri(u))
    if spacing == "cosine":
        t = (1.0 - torch.cos(math.pi * u)) / 2.0
        t[0], t[-1] = 0.0, 1.0
        return t
    raise ValueError(f"schedule must be one of {', '.join(SPACINGS)}, got {spacing!r}")
