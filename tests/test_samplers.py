"""The solvers, schedules, guidance interval and step cache: exact on fields with a known solution, of the order
they claim, the same with and without the KV cache and in both guidance modes, cancellable within a step, and
their settings checked by name and carried in the PNG record."""

import math

import pytest
import torch
from PIL import Image

from omnigen.cli import add_settings_arguments
from omnigen.png import read_settings, save_png
from omnigen.sampler import GenerationCancelled, SamplingPlan, denoise, get_schedule, plan_sampling
from omnigen.settings import SAMPLER_CHOICES, SAMPLER_MIN_STEPS, GenerationSettings, setting_field
from omnigen.solvers import SAMPLERS, SPACINGS, get_sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

START = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def integrate(sampler: str, field, steps: int, spacing: str = "uniform", shift: float = 1.0) -> torch.Tensor:
    step, x, memory = get_sampler(sampler), START.clone(), {}
    times = get_schedule(steps, shift, spacing)
    for t, t_next in zip(times[:-1], times[1:]):
        x, _ = step(field, x, t, t_next, memory)
    return x


def gaussian_field(mean: float = 0.7, scale: float = 0.4):
    """The exact velocity for data N(mean, scale^2) and noise N(0, 1): the flow maps x0 to mean + scale * x0."""
    def field(x, t):
        sigma = math.sqrt(t * t * scale * scale + (1 - t) ** 2)
        return mean + (t * scale * scale - (1 - t)) / sigma ** 2 * (x - t * mean)
    return field, mean + scale * START


# ----------------------------------------------------------------------------- the solvers alone


def test_the_sampler_names_are_the_settings_choices():
    assert set(SAMPLERS) == set(SAMPLER_CHOICES) == set(SAMPLER_MIN_STEPS)
    assert tuple(setting_field("schedule").metadata["choices"]) == SPACINGS


@pytest.mark.parametrize("sampler", SAMPLER_CHOICES)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_a_constant_velocity_is_integrated_exactly(sampler, spacing):
    v = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    end = integrate(sampler, lambda x, t: v, 6, spacing, shift=3.0)
    assert torch.allclose(end, START + v, atol=1e-12)


@pytest.mark.parametrize("sampler", ["heun", "midpoint"])
def test_a_velocity_linear_in_t_is_integrated_exactly_by_the_second_order_steps(sampler):
    a, b = torch.full_like(START, 0.3), torch.full_like(START, -1.7)
    exact = START + a + b / 2  # x(1) = x(0) + integral of a + b t
    assert torch.allclose(integrate(sampler, lambda x, t: a + b * t, 5, shift=2.0), exact, atol=1e-12)
    assert (integrate("euler", lambda x, t: a + b * t, 5) - exact).abs().max() > 0.1  # the test can tell


@pytest.mark.parametrize("sampler, order", [("euler", 1), ("heun", 2), ("midpoint", 2), ("dpmpp_2m", 2)])
def test_each_solver_has_its_order_on_a_curved_flow(sampler, order):
    """Gaussian data: the velocity depends on x and t and the paths curve; halving the step divides the error
    by about 2**order (measured, 64 -> 128 steps: euler 1.99, heun 3.92, dpmpp_2m 3.14 -- its first two and last
    steps are first order and lambda's steps are long near both ends -- and midpoint 8.0, which this field favours)."""
    field, exact = gaussian_field()
    errors = [(integrate(sampler, field, n) - exact).abs().max().item() for n in (64, 128)]
    assert errors[0] > 1e-7
    assert errors[0] / errors[1] > 0.75 * 2 ** order, errors
    if order == 1:
        assert errors[0] / errors[1] < 2.5, errors


def test_the_schedules_run_from_noise_to_data_in_order():
    for spacing in SPACINGS:
        times = get_schedule(8, 1.0, spacing)
        assert times[0] == 0.0 and times[-1] == 1.0 and all(a < b for a, b in zip(times, times[1:])), spacing
    sigmoid, cosine = get_schedule(4, 1.0, "sigmoid"), get_schedule(4, 1.0, "cosine")
    assert sigmoid[1] > 0.25 and sigmoid[2] == pytest.approx(0.5) and cosine[1] < 0.25


# ----------------------------------------------------------------------------- the loop with a counting model


class CountingVelocity(torch.nn.Module):
    """A constant velocity field that counts its calls and rows."""

    dtype = torch.float32

    def __init__(self):
        super().__init__()
        self.v = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
        self.calls, self.rows = 0, 0

    def forward(self, x, timestep, **kwargs):
        self.calls, self.rows = self.calls + 1, self.rows + x.shape[0]
        return self.v.expand_as(x), None


BATCH = type("Batch", (), {"rows": 1, "model_kwargs": lambda self: {}})()


def one_branch(steps: int, sampler: str = "euler", **changes) -> SamplingPlan:
    """The plan of an unguided run over uniform times, without the KV cache (the fake model has none)."""
    return SamplingPlan(1, sampler, tuple(get_schedule(steps)), 2.5, 1.6, use_kv_cache=False, **changes)


@pytest.mark.parametrize("sampler", SAMPLER_CHOICES)
def test_the_step_cache_forces_the_first_two_calls_and_the_last_step(sampler):
    """A constant field changes by nothing, so every call that may be skipped is: what remains are the calls
    the cache must make, and the result is still exact."""
    model, start = CountingVelocity(), torch.zeros(1, 4, 8, 8)
    stats: dict = {}
    end = denoise(model, start, [BATCH], one_branch(10, sampler, cache_threshold=0.01), stats=stats)
    assert torch.allclose(end, model.v, atol=1e-5)
    per_step = 2 if sampler in ("heun", "midpoint") else 1
    assert stats["evaluations"] == model.calls and stats["skipped"] + model.calls == 10 * per_step
    assert model.calls <= 2 + 2 * per_step  # the first two (one step of Heun), the last step's, maybe one more


@pytest.mark.parametrize("sampler", SAMPLER_CHOICES)
def test_each_callback_gets_the_estimate_and_cancels_within_one_step(sampler):
    model, start = CountingVelocity(), torch.zeros(1, 4, 8, 8)
    seen = []

    def stop_after_two(step, total, latents, estimate):
        seen.append(step)
        assert torch.allclose(estimate, model.v, atol=1e-5)  # a constant field: the estimate is the end
        return step < 2

    with pytest.raises(GenerationCancelled):
        denoise(model, start, [BATCH], one_branch(10, sampler), callback=stop_after_two)
    assert seen == [1, 2] and model.calls == 2 * (2 if sampler in ("heun", "midpoint") else 1)


# ----------------------------------------------------------------------------- the pipeline on the tiny model


def picture(colour):
    return Image.new("RGB", (48, 32), colour)


PROMPTS = {0: ("a red circle at the top left", None),
           1: ("<img><|image_1|></img> make the red circle green", [picture("red")])}


def run(pipe, n_images, **kw):
    prompt, images = PROMPTS[n_images]
    args = dict(height=32, width=48, num_inference_steps=4, seed=7, output_type="latent", progress=False)
    return torch.stack(pipe(prompt, images, **{**args, **kw}).images)


INTERVALS = [(0.0, 1.0), (0.3, 1.0), (0.0, 0.5)]  # guidance everywhere, from the second step on, on the first half


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLER_CHOICES)
@pytest.mark.parametrize("n_images", [0, 1])
def test_kv_cache_and_guidance_modes_agree_for_every_sampler(tiny_pipe, sampler, n_images):
    """Also where guidance starts late: the first call runs the cond rows alone, so the cache is filled for
    them first and for the other branches when they first run."""
    for start, end in INTERVALS:
        kw = dict(sampler=sampler, guidance_start=start, guidance_end=end)
        reference = run(tiny_pipe, n_images, cfg_mode="batched", use_kv_cache=False, **kw)
        for mode, cache in (("batched", True), ("separate", True), ("separate", False)):
            other = run(tiny_pipe, n_images, cfg_mode=mode, use_kv_cache=cache, **kw)
            assert (other - reference).abs().max() < 1e-4, (start, end, mode, cache)


def test_the_samplers_differ_on_the_tiny_model(tiny_pipe):
    """Guards the test above: no sampler falls back to Euler, and a guidance interval changes the result."""
    euler = run(tiny_pipe, 1)
    for sampler in SAMPLER_CHOICES[1:]:
        assert (run(tiny_pipe, 1, sampler=sampler) - euler).abs().max() > 1e-3
    strong = run(tiny_pipe, 1, guidance_scale=6.0)  # this random model's guidance moves little at 2.5
    assert (run(tiny_pipe, 1, guidance_scale=6.0, guidance_end=0.5) - strong).abs().max() > 1e-3


def count_rows(pipe, monkeypatch) -> list:
    """(rows, whether the condition ran) of every transformer call."""
    calls, forward = [], pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda x, timestep, **kw: (
        calls.append((x.shape[0], kw.get("input_ids") is not None)) or forward(x, timestep, **kw)))
    return calls


@pytest.mark.parametrize("cache", [True, False])
def test_outside_the_guidance_interval_only_the_cond_rows_run(tiny_pipe, monkeypatch, cache):
    calls = count_rows(tiny_pipe, monkeypatch)
    run(tiny_pipe, 1, guidance_start=0.3, guidance_end=0.6, use_kv_cache=cache)  # t = 0, .25, .5, .75: one guided
    if cache:  # the cond row's condition at step 1, the others' at step 3: each once, then only from the cache
        assert calls == [(1, True), (1, False), (1, False), (1, True), (1, True), (1, False)]
    else:
        assert calls == [(1, True), (1, True), (3, True), (1, True)]


def test_no_guided_step_is_the_unguided_result(tiny_pipe):
    unguided = run(tiny_pipe, 1, guidance_scale=1.0, img_guidance_scale=1.0)
    assert (run(tiny_pipe, 1, guidance_start=0.9, guidance_end=1.0) - unguided).abs().max() < 1e-5


def test_cache_threshold_zero_is_no_cache_to_the_bit_and_a_threshold_skips_calls(tiny_pipe, monkeypatch):
    plain = run(tiny_pipe, 1, num_inference_steps=12)
    assert torch.equal(run(tiny_pipe, 1, num_inference_steps=12, cache_threshold=0.0), plain)
    calls = count_rows(tiny_pipe, monkeypatch)
    cached = run(tiny_pipe, 1, num_inference_steps=12, cache_threshold=0.3)
    assert 3 <= len(calls) < 12 and (cached - plain).abs().max() < 0.5 * plain.abs().max()


# ----------------------------------------------------------------------------- the settings


@pytest.mark.parametrize("change, words", [
    (dict(sampler="rk4"), "sampler must be one of euler, heun, midpoint, dpmpp_2m, got 'rk4'"),
    (dict(schedule="karras"), "schedule must be one of uniform, sigmoid, cosine"),
    (dict(sampler="dpmpp_2m", num_inference_steps=2), "num_inference_steps must be at least 3 with sampler dpmpp_2m"),
    (dict(guidance_start=0.8, guidance_end=0.2), r"guidance_start \(0.8\) must be below guidance_end \(0.2\)"),
    (dict(guidance_start=0.5, guidance_end=0.5), r"guidance_start \(0.5\) must be below guidance_end"),
    (dict(guidance_end=1.5), "guidance_end must be between 0.0 and 1.0"),
    (dict(guidance_start=-0.1), "guidance_start must be between 0.0 and 1.0"),
    (dict(cache_threshold=-0.01), "cache_threshold must be between 0.0 and 1.0"),
])
def test_bad_sampling_settings_are_refused_naming_the_setting(change, words):
    with pytest.raises(ValueError, match=words):
        GenerationSettings().replace(**change).check()


def test_the_defaults_are_the_plain_euler_loop():
    s = GenerationSettings()
    assert (s.sampler, s.schedule, s.guidance_start, s.guidance_end, s.cache_threshold) == ("euler", "uniform", 0.0,
                                                                                            1.0, 0.0)


def test_the_sampling_settings_round_trip_through_the_png_record_and_are_cli_flags(tmp_path):
    import argparse

    settings = GenerationSettings(sampler="dpmpp_2m", schedule="sigmoid", guidance_start=0.1, guidance_end=0.75,
                                  cache_threshold=0.05, num_inference_steps=8)
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", {**settings.as_dict(), "prompt": "p"})
    assert GenerationSettings.from_record(read_settings(path)) == settings
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(["--sampler", "heun", "--schedule", "cosine", "--guidance-end", "0.6",
                              "--cache-threshold", "0.1"])
    assert (args.sampler, args.schedule, args.guidance_end, args.cache_threshold) == ("heun", "cosine", 0.6, 0.1)


class TwoBranchBatch:
    """Two branch rows (cond, uncond) of one image; the fake model ignores what they say."""

    rows = 2

    def model_kwargs(self) -> dict:
        return {}

    def head(self, rows: int) -> "TwoBranchBatch":
        return self


@pytest.mark.parametrize("sampler", SAMPLER_CHOICES)
def test_the_rows_a_plan_budgets_are_the_rows_each_sampler_runs(sampler):
    """The studio's GPU estimate counts plan.branch_rows_per_image(): the rows the loop really runs, with guidance
    on part of the way only."""
    settings = GenerationSettings(sampler=sampler, num_inference_steps=6, guidance_start=0.3, use_kv_cache=False)
    plan = plan_sampling(settings, has_input_images=False)
    model = CountingVelocity()
    denoise(model, torch.zeros(1, 4, 8, 8), [TwoBranchBatch()], plan)
    assert plan.branches == 2 and model.rows == plan.branch_rows_per_image()
    assert 6 < plan.branch_rows_per_image() < 2 * 6 * (2 if sampler in ("heun", "midpoint") else 1)


@pytest.mark.parametrize("changes,images,branches", [
    ({}, False, 2), ({}, True, 3), ({"guidance_scale": 1.0}, False, 1), ({"guidance_scale": 1.0}, True, 3),
    ({"guidance_scale": 1.0, "img_guidance_scale": 1.0}, True, 1), ({"use_img_guidance": False}, True, 2)])
def test_the_plan_decides_the_guidance_branches_once(changes, images, branches):
    plan = plan_sampling(GenerationSettings(**changes), has_input_images=images)
    assert plan.branches == branches and plan.guided(0.5) == (branches > 1)
