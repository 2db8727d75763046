"""What the studio's end-to-end tests share: a studio served on a free local port, and a page in Debian's
headless Chromium (never a browser downloaded by `playwright install`)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots (gitignored)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def browser_expect(timeout_ms: int):
    """Playwright's `expect` with retrying assertions of `timeout_ms` (a busy 2-core machine renders slowly), for
    a browser-test module; the module is skipped where Debian's Chromium or the playwright package is absent."""
    import pytest

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) for the browser "
                    "tests", allow_module_level=True)
    expect = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed").expect
    expect.set_options(timeout=timeout_ms)
    return expect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_studio(model_dir: str | Path, output_dir: Path, extra_tabs: Sequence = ()) -> Iterator[dict]:
    """The studio on `model_dir`, launched in this process on 127.0.0.1: {"url", "studio"}; closed after."""
    import torch

    from app.engine import Studio
    from app.ui import build_app, launch_options
    from omnigen.pipeline import OmniGenPipeline

    threads = torch.get_num_threads()  # the studio sets one thread for a small model: restored below
    pipe = OmniGenPipeline.from_pretrained(model_dir, device="cpu")
    studio = Studio(pipe, output_dir)
    demo = build_app(studio, extra_tabs=extra_tabs)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, **launch_options(studio))
    try:
        yield {"url": url, "studio": studio}
    finally:
        demo.close()
        torch.set_num_threads(threads)


@contextlib.contextmanager
def chromium_page(url: str, timeout_ms: int, height: int = 1600, locale: str | None = None) -> Iterator:
    """A Playwright page on `url` in headless Chromium, 1400 px wide; `locale` (e.g. "zh-CN"): the browser's
    language, which the page and the Accept-Language header follow."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            options = dict(viewport={"width": 1400, "height": height}, **({"locale": locale} if locale else {}))
            page = browser.new_page(**options)
            page.set_default_timeout(timeout_ms)
            page.goto(url)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> None:
    """The whole page as test-artifacts/NAME.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def set_number(page, elem_id: str, value: float) -> None:
    """Type a value into a number or slider widget's box and confirm it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def two_shapes_scene(path: Path) -> Path:
    """A 64x64 picture the embedded model knows: a red square at the top left, a blue one at the bottom right."""
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (255, 255, 255))
    picture.paste((220, 30, 30), (8, 8, 28, 28))
    picture.paste((30, 30, 220), (36, 36, 56, 56))
    picture.save(path)
    return path


def studio_fixtures(folder: str, timeout_ms: int, expect) -> tuple:
    """Two module-scoped fixtures for a browser-test module: `served` (the studio on the embedded model, its outputs
    in a fresh `folder`) and `page` (one Chromium page on it, the Generate button shown). In the module:
    `served, page = studio_fixtures("grid-outputs", TIMEOUT_MS, expect)`."""
    import pytest

    from omnigen.pipeline import DEFAULT_MODEL

    @pytest.fixture(scope="module")
    def served(tmp_path_factory):
        with serve_studio(DEFAULT_MODEL, tmp_path_factory.mktemp(folder)) as studio:
            yield studio

    @pytest.fixture(scope="module")
    def page(served):
        with chromium_page(served["url"], timeout_ms) as opened:
            expect(opened.locator("#generate")).to_be_visible()
            yield opened

    return served, page
