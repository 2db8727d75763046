"""Comparison grids (omnigen/grid.py, `omnigen grid`): axes and their values, cells checked before anything runs,
a failing cell said in place, the labelled grid image, and every cell an ordinary PNG with its settings."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnigen.grid import GRID_KEY, GridError, grid_image, parse_axis, plan_cells, run_grid
from omnigen.pipeline import DEFAULT_MODEL, OmniGenPipeline
from omnigen.png import read_settings
from omnigen.settings import GenerationSettings, Limits

REPO = Path(__file__).resolve().parent.parent
STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = OmniGenPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    torch.set_num_threads(threads)


def test_an_axis_takes_a_list_or_a_range_with_a_count():
    assert parse_axis("seed", "0, 1, 2").values == (0, 1, 2)
    assert parse_axis("guidance_scale", "1.5..3.5:3").values == (1.5, 2.5, 3.5)
    assert parse_axis("num_inference_steps", "2..10:3").values == (2, 6, 10)
    assert parse_axis("sampler", "euler, midpoint").values == ("euler", "midpoint")
    assert parse_axis("prompt", "a red circle, top left | a blue square").values == ("a red circle, top left",
                                                                                    "a blue square")
    assert parse_axis("guidance_interval", "0.0-1.0, 0.2-0.8").values == ((0.0, 1.0), (0.2, 0.8))
    assert parse_axis("lora:style", "0..1:3").values == (0.0, 0.5, 1.0)
    assert parse_axis("seed", [4, 5]).label(4) == "seed 4"


@pytest.mark.parametrize("name, values, message", [
    ("seed", "", "the axis seed has no values"),
    ("seed", " , ,", "the axis seed has no values"),
    ("guidance_scale", "1.5, lots", "the axis guidance_scale: guidance_scale must be a number, got 'lots'"),
    ("sampler", "euler, fastest", "sampler must be one of"),
    ("width", "64, 128", "'width' cannot be an axis"),
    ("guidance_interval", "0.8-0.2", "must start below its end"),
])
def test_a_bad_axis_is_refused_with_what_to_write(name, values, message):
    with pytest.raises(GridError, match=message):
        parse_axis(name, values)


def test_a_grid_over_the_hosts_cell_limit_is_refused_before_anything_runs():
    settings = GenerationSettings(num_inference_steps=STEPS)
    x, y = parse_axis("seed", "0..9:10"), parse_axis("guidance_scale", "1..3:5")
    with pytest.raises(GridError, match=r"50 cells \(10 x 5\), over the limit of 16 \(max_grid_cells\)"):
        plan_cells("a red circle", [], settings, x, y, max_cells=Limits.for_space().max_grid_cells)
    assert len(plan_cells("a red circle", [], settings, x, y)) == 50 <= Limits().max_grid_cells
    with pytest.raises(GridError, match="both axes are seed"):
        plan_cells("x", [], settings, x, parse_axis("seed", "1"))


def test_cells_run_row_by_row_with_their_own_settings_and_a_bad_combination_keeps_its_reason():
    cells = plan_cells("a red circle", [], GenerationSettings(), parse_axis("num_inference_steps", "2, 4"),
                       parse_axis("sampler", "euler, dpmpp_2m"))
    assert [(c.row, c.column) for c in cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [c.caption for c in cells] == ["steps 2 · sampler euler", "steps 4 · sampler euler",
                                          "steps 2 · sampler dpmpp_2m", "steps 4 · sampler dpmpp_2m"]
    assert [c.settings.num_inference_steps for c in cells] == [2, 4, 2, 4]
    assert cells[2].error.startswith("num_inference_steps must be at least 3 with sampler dpmpp_2m")
    assert all(c.error is None for c in cells if c is not cells[2])


def test_an_input_picture_axis_replaces_one_slot(tmp_path):
    cells = plan_cells("<img><|image_1|></img> <img><|image_2|></img> swap", ["a.png", "b.png"],
                       GenerationSettings(), parse_axis("image_2", "c.png | d.png"))
    assert [c.images for c in cells] == [["a.png", "c.png"], ["a.png", "d.png"]]
    assert cells[0].caption == "image 2: c.png"


def test_the_grid_image_is_labelled_and_holds_every_cell_at_least_legibly_large():
    cells = plan_cells("x", [], GenerationSettings(width=64, height=64), parse_axis("seed", "0, 1, 2"),
                       parse_axis("guidance_scale", "1.5, 3"))
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]
    for cell, colour in zip(cells, colours):
        cell.image = Image.new("RGB", (64, 64), colour)
    cells[4].image, cells[4].error = None, "Out of memory. Lower the output size"
    image = np.asarray(grid_image(cells, parse_axis("seed", "0, 1, 2"), parse_axis("guidance_scale", "1.5, 3")))
    found = {tuple(int(v) for v in px) for px in image.reshape(-1, 3)}
    assert {(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (200, 0, 200)} <= found
    assert (0, 200, 200) not in found and (235, 235, 235) in found  # the failed cell is grey, with its reason
    assert image.shape[1] >= 3 * 160 and image.shape[0] >= 2 * 160  # 64 px cells are enlarged for the labels
    assert (image[:20] < 100).all(axis=2).any()  # the column labels: dark text above the cells
    assert (image[:, :40] < 100).all(axis=2).any()  # the row labels: dark text left of the cells


@pytest.mark.slow
def test_a_grid_on_the_embedded_model_gives_ordinary_results_and_a_failing_cell_lets_the_others_go_on(pipe):
    seen = []
    x, y = parse_axis("seed", "0, 1"), parse_axis("sampler", "euler, dpmpp_2m")
    grid = run_grid(pipe, "a red circle at the top left", x=x, y=y, settings=pipe.settings(num_inference_steps=STEPS),
                    on_cell=seen.append)
    assert [c.caption for c in seen] == [c.caption for c in grid.cells] and len(seen) == 4
    assert [c.error is None for c in grid.cells] == [True, True, False, False]
    for cell in grid.cells[:2]:
        again = pipe(cell.prompt, seed=cell.settings.seed, num_inference_steps=STEPS, sampler="euler").images[0]
        assert np.array_equal(np.asarray(again), np.asarray(cell.image))  # a cell is the ordinary call's picture
        assert cell.record["seed"] == cell.settings.seed and cell.record["sampler"] == "euler"
    assert grid.image.width > 2 * 64


@pytest.mark.slow
def test_omnigen_grid_writes_the_grid_and_every_cell_with_its_settings(tmp_path):
    out = tmp_path / "grid.png"
    done = subprocess.run([sys.executable, "-m", "omnigen", "grid", "--prompt", "a blue square", "--x", "seed=3,4",
                           "--y", "guidance_scale=1.5..2.5:2", "--steps", str(STEPS), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    description = json.loads(Image.open(out).info[GRID_KEY])
    assert description["x"]["labels"] == ["seed 3", "seed 4"]
    assert description["y"]["labels"] == ["guidance 1.5", "guidance 2.5"]
    cells = sorted((tmp_path / "grid-cells").glob("*.png"))
    assert [c.name for c in cells] == ["cell-0-0.png", "cell-0-1.png", "cell-1-0.png", "cell-1-1.png"]
    assert [(read_settings(c)["seed"], read_settings(c)["guidance_scale"]) for c in cells] == [
        (3, 1.5), (4, 1.5), (3, 2.5), (4, 2.5)]
    bad = subprocess.run([sys.executable, "-m", "omnigen", "grid", "--prompt", "x", "--x", "seed=", "--out",
                          str(tmp_path / "bad.png")], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert bad.returncode == 2 and "The axis seed has no values" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.png").exists()


def test_the_command_needs_a_prompt_unless_an_axis_is_the_prompt(capsys, tmp_path):
    from omnigen.cli import main

    assert main(["grid", "--x", "seed=1,2", "--out", str(tmp_path / "g.png")]) == 2
    assert "--prompt is required (unless an axis is the prompt" in capsys.readouterr().err
    assert main(["grid", "--x", "prompt=a|b", "--y", "width=64,128", "--out", str(tmp_path / "g.png")]) == 2
    assert "'width' cannot be an axis" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
