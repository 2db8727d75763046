"""The studio for real work, in headless Chromium: an uploaded LoRA adapter changes the picture and is named in its
settings; a dropped PNG restores its prompt and settings exactly; the history survives a reload, belongs to one
browser and can be pruned; bad adapters, forged PNGs and an offline Hub id get sentences.

Needs Debian's /usr/bin/chromium and the playwright Python package (never `playwright install`). Screenshots go
to test-artifacts/studio-*.png.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from studio_support import browser_expect, screenshot, serve_studio, set_number, studio_fixtures

TIMEOUT_MS = 45_000
expect = browser_expect(TIMEOUT_MS)
pytestmark = [pytest.mark.browser, pytest.mark.slow]

from omnigen.lora import add_lora, lora_layers, save_lora, unload_lora  # noqa: E402
from omnigen.pipeline import DEFAULT_MODEL  # noqa: E402
from omnigen.png import read_settings  # noqa: E402
from omnigen.settings import GenerationSettings  # noqa: E402


served, page = studio_fixtures("studio-outputs", TIMEOUT_MS, expect)


@pytest.fixture(scope="module")
def files(tmp_path_factory, served) -> dict[str, Path]:
    """A tiny adapter for the embedded model (random B: it changes the output) zipped as peft saves it, and
    zips that are not adapters."""
    folder = tmp_path_factory.mktemp("adapter-files")
    model = served["studio"].pipe.transformer  # nothing runs yet: attached, saved and removed again
    add_lora(model, "tiny", rank=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            weight = layer.lora_B["tiny"].weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.2)
    save_lora(model, folder / "tiny", "tiny")
    unload_lora(model)
    foreign = folder / "foreign.safetensors"  # a rank-4 adapter of a layer 7 features wide: not this model's
    save_file({"base_model.model.llm.layers.0.self_attn.qkv_proj.lora_A.weight": torch.zeros(4, 7),
               "base_model.model.llm.layers.0.self_attn.qkv_proj.lora_B.weight": torch.zeros(7, 4)}, str(foreign))
    zips = {"tiny": {f"tiny/{f.name}": f.read_bytes() for f in (folder / "tiny").iterdir()},
            "foreign": {"foreign/adapter_model.safetensors": foreign.read_bytes(),
                        "foreign/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4}).encode()},
            "notes": {"notes/readme.txt": b"just notes"},
            "escape": {f"../../escape/{f.name}": f.read_bytes() for f in (folder / "tiny").iterdir()}}
    made = {}
    for name, members in zips.items():
        made[name] = folder / f"{name}.zip"
        with zipfile.ZipFile(made[name], "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
    return made


def shoot(page, name: str) -> None:
    screenshot(page, f"studio-{name}")


def open_section(page, title: str, inside: str) -> None:
    if not page.locator(inside).is_visible():
        page.get_by_text(title, exact=True).click()
    expect(page.locator(inside)).to_be_visible()


def generate(page, served) -> Path:
    """Press Generate and return the one new PNG of the output folder."""
    outputs = Path(served["studio"].output_dir)
    before = set(outputs.glob("2*.png"))
    page.locator("#generate").click()
    for _ in range(TIMEOUT_MS // 250):  # the status may still say Done from the run before
        new = set(outputs.glob("2*.png")) - before
        if new:
            break
        page.wait_for_timeout(250)
    expect(page.locator("#status")).to_contain_text("Done")
    (new,) = set(outputs.glob("2*.png")) - before
    return new


def uploaded(page, file_name: str):
    return page.locator("#adapter-upload").get_by_role("cell", name=file_name)


def toast(page, words: str):
    found = page.locator(".toast-body").filter(has_text=words).first
    expect(found).to_be_visible()
    expect(page.get_by_text("Traceback")).to_have_count(0)
    return found


def fixed_seed(page, seed: int, steps: int) -> None:
    set_number(page, "steps", steps)
    page.locator("#randomize-seed input").uncheck()
    set_number(page, "seed", seed)


# ----------------------------------------------------------------------------- adapters


def test_an_uploaded_adapter_changes_the_picture_and_is_named_in_its_settings(page, served, files):
    page.locator("#prompt textarea").fill("a red square on a white background")
    fixed_seed(page, 11, 3)
    base = generate(page, served)
    assert read_settings(base)["loras"] == {}

    open_section(page, "Adapters (LoRA)", "#adapter-upload")
    page.locator("#adapter-upload input[type=file]").set_input_files(str(files["tiny"]))
    expect(uploaded(page, "tiny.zip")).to_be_visible()
    page.locator("#adapter-load-upload").click()
    expect(page.locator("#adapter-row-0")).to_be_visible()
    expect(page.locator("#adapter-label-0")).to_contain_text("tiny")
    expect(page.locator("#adapters-summary")).to_contain_text("tiny")
    shoot(page, "adapter-loaded")

    adapted = generate(page, served)
    assert read_settings(adapted)["loras"] == {"tiny": 1.0}
    expect(page.locator("#settings-json")).to_contain_text("tiny")
    differ = np.abs(np.asarray(Image.open(adapted), dtype=int) - np.asarray(Image.open(base), dtype=int))
    assert differ.max() > 0, "the adapter did not change the picture"
    shoot(page, "adapter-result")

    set_number(page, "adapter-slider-0", 0.5)
    expect(page.locator("#adapters-summary")).to_contain_text("at 0.5")
    assert read_settings(generate(page, served))["loras"] == {"tiny": 0.5}

    page.locator("#adapter-unload-0").click()
    expect(page.locator("#adapter-row-0")).to_be_hidden()
    expect(page.locator("#adapters-summary")).to_contain_text("No adapter loaded")
    again = generate(page, served)
    assert read_settings(again)["loras"] == {}
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(base)))  # the base model again


def test_zips_that_are_not_an_adapter_are_refused_and_nothing_loads(page, served, files):
    open_section(page, "Adapters (LoRA)", "#adapter-upload")
    for name, words in (("notes", "is not a LoRA adapter"), ("escape", "outside the adapter's folder"),
                        ("foreign", "does not fit this model")):
        page.locator("#adapter-upload input[type=file]").set_input_files(str(files[name]))
        expect(uploaded(page, f"{name}.zip")).to_be_visible()
        page.locator("#adapter-load-upload").click()
        toast(page, words)
        shoot(page, f"adapter-refused-{name}")
        page.locator(".toast-close").first.click()
        page.locator("#adapter-upload").hover()  # a refused upload stays in the box until cleared
        page.locator("#adapter-upload button[aria-label=Clear]").locator("visible=true").last.click()
        expect(uploaded(page, f"{name}.zip")).to_have_count(0)
    expect(page.locator("#adapter-row-0")).to_be_hidden()
    assert served["studio"].pipe.loras == {}
    assert not list(Path(served["studio"].output_dir).parent.rglob("escape"))
    expect(page.get_by_text("/tmp/omnigen-adapter-")).to_have_count(0)  # the upload is named, not a server path


def test_a_hub_id_offline_says_the_hub_cannot_be_reached(page):
    open_section(page, "Adapters (LoRA)", "#adapter-upload")
    page.get_by_role("tab", name="Hugging Face Hub").click()
    page.locator("#adapter-hub textarea, #adapter-hub input").first.fill("someone/omnigen-style-lora")
    page.locator("#adapter-load-hub").click()
    toast(page, "cannot reach the Hugging Face Hub")
    shoot(page, "adapter-hub-offline")
    page.locator(".toast-close").first.click()


# ----------------------------------------------------------------------------- settings from a picture


def drop_picture(page, path: Path) -> None:
    open_section(page, "Settings from a picture", "#picture-drop")
    page.locator("#picture-drop input[type=file]").set_input_files(str(path))


def test_a_dropped_png_restores_its_prompt_and_settings_exactly(page, served, tmp_path):
    settings = GenerationSettings(width=48, height=64, num_inference_steps=4, guidance_scale=3.3, seed=4242,
                                  sampler="heun", schedule="sigmoid", time_shift=1.5, negative_prompt="blurry")
    made = served["studio"].pipe("a blue square on a white background", None, settings)  # Python, not the page
    original = made.save(tmp_path / "made-in-python.png")
    page.goto(served["url"])  # a fresh page: default settings
    expect(page.locator("#generate")).to_be_visible()
    drop_picture(page, original)
    expect(page.locator("#picture-report")).to_contain_text("Settings found")
    expect(page.locator("#picture-report")).to_contain_text("prompt alone")
    page.locator("#picture-restore").click()
    expect(page.locator("#prompt textarea")).to_have_value("a blue square on a white background")
    shoot(page, "picture-restored")

    remade = generate(page, served)
    again = read_settings(remade)
    assert again.pop("preset") == "text_to_image"  # the studio notes the page's preset; all else is the same
    assert again == read_settings(original)
    assert np.array_equal(np.asarray(Image.open(remade)), np.asarray(Image.open(original)))


def forged_png(path: Path, text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("omnigen", text)
    Image.new("RGB", (32, 32), (200, 40, 40)).save(path, pnginfo=info)
    return path


def test_forged_and_oversized_metadata_restore_only_what_is_valid(page, served, tmp_path):
    forged = {"prompt": "a forged prompt", "num_inference_steps": "9; rm -rf /", "guidance_scale": 1e12,
              "width": 50, "sampler": "magic", "time_shift": 2.0, "seed": 77, "num_input_images": 2,
              "<script>alert(1)</script>": 1}
    set_number(page, "steps", 3)
    drop_picture(page, forged_png(tmp_path / "forged.png", json.dumps(forged)))
    report = page.locator("#picture-report")
    expect(report).to_contain_text("Ignored")
    for name in ("num_inference_steps", "guidance_scale", "width", "sampler", "unknown keys"):
        expect(report).to_contain_text(name)
    expect(report).to_contain_text("2 input pictures")
    expect(report).to_contain_text("<script>alert(1)</script>")  # shown as text, never as HTML
    page.locator("#picture-restore").click()
    expect(page.locator("#prompt textarea")).to_have_value("a forged prompt")
    expect(page.locator("#steps input[type=number]")).to_have_value("3")  # the forged steps were not taken
    expect(page.locator("#seed input[type=number]")).to_have_value("77")
    shoot(page, "picture-forged")

    drop_picture(page, forged_png(tmp_path / "huge.png", json.dumps({"prompt": "x" * 3_000_000})))
    expect(report).to_contain_text("No settings to restore")
    expect(report).to_contain_text("refused unread")
    expect(page.locator("#picture-restore")).to_be_disabled()
    plain = tmp_path / "plain.png"
    Image.new("RGB", (16, 16)).save(plain)
    drop_picture(page, plain)
    expect(report).to_contain_text("carries no OmniGen settings")
    shoot(page, "picture-without-settings")


# ----------------------------------------------------------------------------- history


def test_the_history_survives_a_reload_and_belongs_to_this_browser(page, served):
    history = page.locator("#history .grid-container .thumbnail-item")  # not the strip of an opened picture
    expect(history.first).to_be_visible()
    count = history.count()
    assert count >= 4  # the runs above
    page.reload()
    expect(page.locator("#generate")).to_be_visible()
    expect(history).to_have_count(count)
    shoot(page, "history-after-reload")

    history.first.click()
    expect(page.locator("#settings-json")).to_contain_text("seed")
    page.locator("#use-as-input").click()
    expect(page.locator("#image-1 img").first).to_be_visible()
    page.locator("#history-delete").click()
    expect(history).to_have_count(count - 1)
    outputs = Path(served["studio"].output_dir)
    assert len(list(outputs.glob("2*.png"))) == count - 1  # the deleted run's picture is gone too

    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        other = context.new_page()
        other.goto(served["url"])
        expect(other.locator("#generate")).to_be_visible()
        expect(other.locator("#history")).to_be_visible()
        expect(other.locator("#history .grid-container .thumbnail-item")).to_have_count(0)
        screenshot(other, "studio-history-other-browser")
    finally:
        context.close()


def test_the_history_survives_a_restart_of_the_studio(page, tmp_path, monkeypatch):
    import studio_support

    port = studio_support.free_port()  # the same address after the restart: localStorage belongs to it
    monkeypatch.setattr(studio_support, "free_port", lambda: port)
    items = "#history .grid-container .thumbnail-item"
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1400})  # a browser of its own
    try:
        tab = context.new_page()
        with serve_studio(DEFAULT_MODEL, tmp_path) as first:
            tab.goto(first["url"])
            expect(tab.locator("#generate")).to_be_visible()
            set_number(tab, "steps", 2)
            generate(tab, first)
            expect(tab.locator(items)).to_have_count(1)
        with serve_studio(DEFAULT_MODEL, tmp_path) as second:
            tab.goto(second["url"])
            expect(tab.locator("#generate")).to_be_visible()
            expect(tab.locator(items)).to_have_count(1)
            tab.locator(items).first.click()
            tab.locator("#reuse").click()
            expect(tab.locator("#steps input[type=number]")).to_have_value("2")
            shoot(tab, "history-after-restart")
    finally:
        context.close()


def test_small_results_are_drawn_with_nearest_neighbour_scaling(page):
    rendering = page.locator("#history img").first.evaluate("img => getComputedStyle(img).imageRendering")
    assert rendering == "pixelated"
    shoot(page, "pixelated-results")
