"""The Grid tab, saved compositions and the Batch tab in headless Chromium, on the embedded model: a 2x3 grid with
six labelled cells and the grid image, a second grid cancelled midway whose finished cells are in the history, a
composition saved in one page and loaded in a fresh one (and in Python) giving the same PNG byte for byte, and a
batch of uploaded pictures downloaded as one zip and put in the history; and on a Chinese page, a grid refused in
Chinese."""

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from studio_support import browser_expect, screenshot, set_number, studio_fixtures, two_shapes_scene

TIMEOUT_MS = 60_000
expect = browser_expect(TIMEOUT_MS)
pytestmark = [pytest.mark.browser, pytest.mark.slow]

from omnigen.composition import generate, load_composition  # noqa: E402
from omnigen.grid import GRID_KEY  # noqa: E402
from omnigen.pipeline import DEFAULT_MODEL, OmniGenPipeline  # noqa: E402
from omnigen.png import read_settings  # noqa: E402


served, page = studio_fixtures("grid-outputs", TIMEOUT_MS, expect)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return two_shapes_scene(tmp_path_factory.mktemp("grid-inputs") / "scene.png")


def download(page, selector: str, path: Path) -> Path:
    """Click a download button and keep what it sends as `path`."""
    with page.expect_download() as sent:
        page.locator(selector).click()
    sent.value.save_as(path)
    return path


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def run_grid(page, x_values: str, y_values: str) -> None:
    open_tab(page, "Grid")
    fill(page, "grid-x-values", x_values)
    fill(page, "grid-y-values", y_values)
    page.locator("#grid-run").click()


def open_composition(page) -> None:
    if not page.locator("#composition-save").is_visible():
        page.locator("#composition").get_by_text("Composition").first.click()
    expect(page.locator("#composition-save")).to_be_visible()


def history_count(page) -> int:
    open_tab(page, "Generate")
    return page.locator("#history img").count()


def test_a_two_by_three_grid_shows_six_labelled_cells_and_the_grid_image(page, served):
    set_number(page, "steps", 2)
    run_grid(page, "0, 1", "1.5, 2.5, 3.5")  # seed across, guidance down
    expect(page.locator("#grid-status")).to_contain_text("Grid done: 6 of 6 cells made")
    labels = page.locator("#grid-cells .caption-label")
    expect(labels).to_have_count(6)
    assert labels.all_inner_texts() == [f"seed {s} · guidance {g}" for g in ("1.5", "2.5", "3.5") for s in (0, 1)]
    grid = page.locator("#grid-image img")
    expect(grid).to_be_visible()
    screenshot(page, "browser-grid")
    path = Path(re.search(r"file=(.*)$", grid.get_attribute("src")).group(1))
    description = json.loads(Image.open(path).info[GRID_KEY])
    assert description["x"]["labels"] == ["seed 0", "seed 1"]
    assert description["y"]["labels"] == ["guidance 1.5", "guidance 2.5", "guidance 3.5"]
    files = [served["studio"].output_dir / cell["file"] for cell in description["cells"]]
    assert [(read_settings(f)["seed"], read_settings(f)["guidance_scale"]) for f in files] == [
        (s, g) for g in (1.5, 2.5, 3.5) for s in (0, 1)]  # each cell an ordinary result with its settings
    open_tab(page, "Generate")
    expect(page.locator("#history img")).to_have_count(6)  # in the history, as they finished


def test_a_second_grid_cancelled_midway_keeps_its_finished_cells_in_history(page):
    before = history_count(page)
    set_number(page, "steps", 30)  # long enough to cancel in the middle
    run_grid(page, "10, 11, 12", "2, 3")
    expect(page.locator("#grid-status")).to_contain_text(re.compile(r"Cell [3-5] of 6"), timeout=5 * TIMEOUT_MS)
    page.locator("#grid-cancel").click()
    status = page.locator("#grid-status")
    expect(status).to_contain_text("Grid cancelled after")
    done = int(re.search(r"after (\d) of 6", status.inner_text()).group(1))
    assert 2 <= done < 6
    expect(page.locator("#grid-cells .caption-label")).to_have_count(done)
    open_tab(page, "Generate")
    expect(page.locator("#history img")).to_have_count(before + done)
    set_number(page, "steps", 2)


def test_an_axis_without_values_is_refused_with_a_sentence(page, served):
    before = len(list(served["studio"].output_dir.glob("*.png")))
    run_grid(page, " ", "1.5")
    expect(page.get_by_text("The axis seed has no values")).to_be_visible()
    assert len(list(served["studio"].output_dir.glob("*.png"))) == before


def test_send_to_composition_makes_one_of_a_history_item(page, tmp_path):
    open_tab(page, "Generate")
    page.locator("#history img").last.click()  # the oldest: the first grid's first cell
    expect(page.locator("#settings-json")).to_contain_text("guidance_scale")
    open_composition(page)
    page.locator("#to-composition").click()
    download_button = page.locator("#composition-download")
    expect(download_button).to_be_visible()
    composition = load_composition(download(page, "#composition-download", tmp_path / "from-history.zip"))
    assert (composition.settings.seed, composition.settings.guidance_scale) == (0, 1.5)
    assert composition.images == [] and composition.preset == "text_to_image"
    page.locator("#reuse").click()  # the page as that cell ran: its own guidance and seed, not the grid's page
    expect(page.locator("#guidance input[type=number]")).to_have_value("1.5")
    expect(page.locator("#seed input[type=number]")).to_have_value("0")


def test_a_composition_saved_here_and_loaded_in_a_fresh_page_and_in_python_gives_the_same_png(page, served, scene,
                                                                                             tmp_path):
    open_tab(page, "Generate")
    page.get_by_label("Edit", exact=True).check()
    page.locator("#image-1 input[type=file]").set_input_files(str(scene))
    expect(page.locator("#prompt-check")).to_contain_text("Placeholders and images match")
    set_number(page, "steps", 3)
    set_number(page, "seed", 4321)
    open_composition(page)
    page.locator("#composition-save").click()
    composition = tmp_path / "scene.omnigen.zip"
    for _ in range(20):  # the button may still offer the history item's composition until the new one arrives
        if load_composition(download(page, "#composition-download", composition)).settings.seed == 4321:
            break
        page.wait_for_timeout(500)

    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1600})  # nothing shared
    try:
        fresh = context.new_page()
        fresh.set_default_timeout(TIMEOUT_MS)
        fresh.goto(served["url"])
        expect(fresh.locator("#generate")).to_be_visible()
        open_composition(fresh)
        fresh.locator("#composition-load input[type=file]").set_input_files(str(composition))
        expect(fresh.locator("#prompt textarea")).to_have_value(re.compile(r"<img><\|image_1\|></img> make the red"))
        expect(fresh.locator("#seed input[type=number]")).to_have_value("4321")
        expect(fresh.locator("#prompt-preview .prompt-image img")).to_have_count(1)
        fresh.locator("#generate").click()
        expect(fresh.locator("#status")).to_contain_text("Done")
        from_page = download(fresh, "#download", tmp_path / "from-page.png")
    finally:
        context.close()

    pipe = OmniGenPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    loaded = load_composition(composition)
    assert loaded.settings.seed == 4321 and loaded.settings.num_inference_steps == 3 and loaded.preset == "edit"
    from_python = generate(pipe, loaded).save(tmp_path / "from-python.png")
    assert from_page.read_bytes() == from_python.read_bytes()  # pixels and settings, byte for byte


def history_lines(served) -> int:
    """How many runs the studio's history holds, all browsers together (the page's gallery counts its preview's
    pictures too)."""
    return sum(len(index.read_text().splitlines()) for index in served["studio"].history.private.glob("*.jsonl"))


def test_a_batch_of_uploaded_pictures_comes_back_as_one_zip_and_into_the_history(page, served, scene, tmp_path):
    second = tmp_path / "second.png"
    Image.new("RGB", (48, 32), (30, 200, 30)).save(second)
    open_tab(page, "Generate")
    before = history_lines(served)
    set_number(page, "steps", 2)
    open_tab(page, "Batch")
    page.locator("#batch-pictures input[type=file]").set_input_files([str(scene), str(second)])
    fill(page, "batch-instruction", "make the red circle green")
    page.locator("#batch-run").click()
    expect(page.locator("#batch-status")).to_contain_text("Batch done: 2 of 2 job(s) made, 0 failed")
    with zipfile.ZipFile(download(page, "#batch-download", tmp_path / "results.zip")) as zipped:
        assert sorted(zipped.namelist()) == ["results.jsonl", "scene.png", "second.png"]
        lines = [json.loads(line) for line in zipped.read("results.jsonl").decode().splitlines()]
        assert [(r["name"], r["file"]) for r in lines] == [("scene", "scene.png"), ("second", "second.png")]
        made = Image.open(io.BytesIO(zipped.read("second.png")))
        assert made.size == (48, 32)  # each picture's own size
        assert read_settings(made)["prompt"] == "<img><|image_1|></img> make the red circle green"
    assert history_lines(served) == before + 2  # each picture in the history, written before the status


def test_a_chinese_page_says_why_a_grid_is_refused_in_chinese(page, served):
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1600}, locale="zh-CN")
    try:
        chinese = context.new_page()
        chinese.set_default_timeout(TIMEOUT_MS)
        chinese.goto(served["url"])
        expect(chinese.locator("#generate")).to_be_visible()
        chinese.get_by_role("tab", name="对比网格", exact=True).click()
        fill(chinese, "grid-x-values", " ")
        chinese.locator("#grid-run").click()
        expect(chinese.get_by_text("坐标轴 seed 没有取值")).to_be_visible()
    finally:
        context.close()
