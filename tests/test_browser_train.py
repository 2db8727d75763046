"""The Train tab in headless Chromium, on the embedded model: a bad upload is explained by line; the example
dataset trains (start, stop, resume) with a live loss plot, progress and validation samples; its adapter is
loaded with one click and the Generate tab's next image records it.

Needs Debian's /usr/bin/chromium (apt-get install chromium), the playwright Python package (its browser
bundle is not used) and assets/omnigen-mini. Screenshots go to test-artifacts/.
"""

import re
from pathlib import Path

import pytest
from studio_support import CHROMIUM, chromium_page, screenshot, serve_studio, set_number

from omnigen.pipeline import DEFAULT_MODEL as MODEL
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) for the browser tests",
                allow_module_level=True)
if not (MODEL / "model.safetensors").is_file():
    pytest.skip(f"the embedded model is missing ({MODEL})", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect
pytestmark = [pytest.mark.browser, pytest.mark.slow]

from app.train_tab import build_train_tab  # noqa: E402
from omnigen.png import read_settings  # noqa: E402

TIMEOUT_MS = 60_000
TRAIN_TIMEOUT_MS = 150_000  # 24 steps of batches of 16 take ~10 s alone; a busy 2-core machine is slower
STEPS = 24
expect.set_options(timeout=TIMEOUT_MS)  # retrying expectations: a busy 2-core machine renders slowly


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    with serve_studio(MODEL, tmp_path_factory.mktemp("train-outputs"), extra_tabs=[build_train_tab]) as served:
        yield served["url"], served["studio"]


@pytest.fixture(scope="module")
def page(studio_url):
    with chromium_page(studio_url[0], TIMEOUT_MS, height=1800) as page:
        page.get_by_role("tab", name="Train (LoRA)").click()
        expect(page.locator("#train-start")).to_be_visible()
        yield page


def shoot(page, name: str) -> None:
    screenshot(page, f"browser-train-{name}")


def test_a_bad_jsonl_upload_is_explained_by_line(page, tmp_path):
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"instruction": "a red square", "output_image": "images/missing.png"}\n{oops\n')
    page.get_by_text("Or upload a dataset").click()
    page.locator("#train-upload input[type=file]").set_input_files(str(jsonl))
    expect(page.locator("#train-upload")).to_contain_text(re.compile(r"data\s*\.jsonl"))  # name, ext: two spans
    page.locator("#train-load-upload").click()
    toast = page.locator(".toast-body").filter(has_text="2 problem(s) in the training data")
    expect(toast.first).to_be_visible()
    expect(toast.first).to_contain_text("data.jsonl:1:")
    expect(toast.first).to_contain_text("data.jsonl:2:")
    expect(page.get_by_text("Traceback")).to_have_count(0)
    shoot(page, "bad-upload")
    expect(page.locator("#train-rows-info")).to_contain_text("No training rows yet")


def test_rows_are_built_in_the_page_and_checked_before_they_join(page, tmp_path):
    from PIL import Image

    source, target = tmp_path / "source.png", tmp_path / "target.png"
    Image.new("RGB", (64, 64), (220, 30, 30)).save(source)
    Image.new("RGB", (64, 64), (30, 30, 220)).save(target)
    page.locator("#train-start").click()  # no rows yet: refused at once, in words
    expect(page.locator(".toast-body").filter(has_text="there are no rows").first).to_be_visible()

    page.locator("#train-instruction textarea").fill("<img><|image_1|></img> make the picture blue")
    page.locator("#train-target input[type=file]").set_input_files(str(target))
    page.locator("#train-add-row").click()  # the instruction names image 1, but no input picture was given
    expect(page.locator(".toast-body").filter(has_text="This row cannot train").first).to_contain_text("image")
    page.locator("#train-inputs input[type=file]").set_input_files([str(source)])
    expect(page.locator("#train-inputs")).to_contain_text(re.compile(r"source\s*\.png"))
    page.locator("#train-add-row").click()
    expect(page.locator("#train-rows-info")).to_contain_text("1 training row(s) (1 with input images)")
    expect(page.locator("#train-rows")).to_contain_text("make the picture blue [+1 input image]")
    expect(page.locator("#train-instruction textarea")).to_have_value("")  # ready for the next row

    page.locator("#train-instruction textarea").fill("a blue picture")
    page.locator("#train-target input[type=file]").set_input_files(str(target))
    page.locator("#train-add-row").click()
    expect(page.locator("#train-rows-info")).to_contain_text("2 training row(s)")
    shoot(page, "rows")
    page.locator("#train-rows img").first.click()
    page.locator("#train-remove-row").click()
    expect(page.locator("#train-rows-info")).to_contain_text("1 training row(s) (text-to-image)")
    page.locator("#train-clear-rows").click()
    expect(page.locator("#train-rows-info")).to_contain_text("No training rows yet")


def test_the_example_trains_stops_resumes_and_its_adapter_reaches_generate(page, studio_url):
    url, studio = studio_url
    page.locator("#train-example").click()
    expect(page.locator("#train-rows-info")).to_contain_text("16 training row(s)")
    expect(page.locator("#train-rows img")).to_have_count(16)
    expect(page.locator("#train-name input, #train-name textarea").first).to_have_value("rectangle")
    expect(page.locator("#train-steps input[type=number]")).to_have_value("150")
    set_number(page, "train-steps", STEPS)
    page.get_by_text("Validation and regularisation").click()
    set_number(page, "train-sample-every", STEPS // 2)
    shoot(page, "example-loaded")

    status = page.locator("#train-status")
    page.locator("#train-start").click()
    expect(status).to_contain_text(re.compile(r"step [1-9]\d* of 24"))
    page.locator("#train-stop").click()
    expect(status).to_contain_text(re.compile(r"Stopped at step \d+ of 24"), timeout=TRAIN_TIMEOUT_MS)
    stopped_at = int(re.search(r"Stopped at step (\d+)", status.inner_text()).group(1))
    assert stopped_at < STEPS
    adapter = page.locator("#train-adapter input, #train-adapter textarea").first
    expect(adapter).to_have_value(re.compile(r"lora-runs/rectangle-\d{8}-\d{6}/adapter$"))
    shoot(page, "stopped")

    page.locator("#train-resume").click()
    expect(status).to_contain_text(f"Done: {STEPS} steps", timeout=TRAIN_TIMEOUT_MS)
    plot = page.locator("#train-loss-plot")
    expect(plot.locator("canvas, svg").first).to_be_visible()
    samples = page.locator("#train-samples")
    expect(samples).to_contain_text(f"at step {STEPS}")
    expect(samples.locator("img")).to_have_count(5)
    run_dir = Path(adapter.input_value()).parent
    logged = (run_dir / "loss.csv").read_text().splitlines()
    assert len(logged) == STEPS + 1  # header + one row per step: the stopped part and the resumed part
    shoot(page, "trained")

    page.locator("#train-use").click()
    expect(page.locator("#train-loaded")).to_contain_text("rectangle at strength 1")
    assert studio.pipe.loras == {"rectangle": 1.0}

    page.get_by_role("tab", name="Generate").click()
    page.locator("#prompt textarea").fill("a big red rectangle in the upper left on a white background")
    set_number(page, "steps", 8)
    before = set(Path(studio.output_dir).glob("2*.png"))
    page.locator("#generate").click()
    expect(page.locator("#status")).to_contain_text("Done")
    expect(page.locator("#settings-json")).to_contain_text("rectangle")
    shoot(page, "generated-with-adapter")
    (result,) = set(Path(studio.output_dir).glob("2*.png")) - before
    assert read_settings(result)["loras"] == {"rectangle": 1.0}

    page.get_by_role("tab", name="Train (LoRA)").click()
    page.locator("#train-unload").click()
    expect(page.locator("#train-loaded")).to_contain_text("base model")
    assert studio.pipe.loras == {}
