"""The studio in the browser's language: Chinese for a zh-CN browser (labels from Gradio's i18n, messages from the
server by Accept-Language), English for en-US. Debian's /usr/bin/chromium; a screenshot of the Chinese page goes
to test-artifacts/studio-zh-CN.png."""

import pytest

from studio_support import browser_expect, chromium_page, screenshot, serve_studio

TIMEOUT_MS = 45_000
expect = browser_expect(TIMEOUT_MS)
pytestmark = [pytest.mark.browser, pytest.mark.slow]

from app.train_tab import build_train_tab  # noqa: E402
from omnigen.pipeline import DEFAULT_MODEL  # noqa: E402

MISMATCH = "<img><|image_1|></img> make the red circle green"


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    with serve_studio(DEFAULT_MODEL, tmp_path_factory.mktemp("i18n-outputs"), extra_tabs=[build_train_tab]) as served:
        yield served["url"]


def open_page(studio_url, locale):
    return chromium_page(studio_url, TIMEOUT_MS, locale=locale)


def press_generate_with_a_missing_picture(page) -> None:
    page.locator("#prompt textarea").fill(MISMATCH)
    page.locator("#generate").click()


def test_a_chinese_browser_gets_the_studio_in_chinese(studio_url):
    with open_page(studio_url, "zh-CN") as page:
        expect(page.locator("#generate")).to_have_text("生成")
        expect(page.locator("#cancel")).to_have_text("取消")
        expect(page.locator("#prompt")).to_contain_text("提示词")
        expect(page.locator("#preset")).to_contain_text("预设任务")
        expect(page.locator("#preset")).to_contain_text("文生图")
        expect(page.locator("#preset-info")).to_contain_text("描述你想要的画面")  # made on the server, on load
        expect(page.locator("#examples")).to_contain_text("两个形状")
        expect(page.locator("#model-header")).to_contain_text("设备")
        expect(page.locator("#model-header")).to_contain_text("没有说明的部分按约定绘制")  # the folder's prompt guide
        expect(page.locator("#negative-prompt")).to_contain_text("负面提示词")
        expect(page.locator("#steps")).to_contain_text("步数")
        expect(page.locator("#seed")).to_contain_text("种子")
        expect(page.get_by_role("tab", name="训练（LoRA）")).to_be_visible()
        shown = page.locator("body").inner_text()
        assert "__i18n__" not in shown and "[object Object]" not in shown
        expect(page.locator("#image-1")).to_contain_text("图 1")

        press_generate_with_a_missing_picture(page)
        expect(page.locator("#prompt-check")).to_contain_text("图片槽位 1 是空的")
        toast = page.locator(".toast-body").first
        expect(toast).to_contain_text("提示词使用了 <|image_1|>，但图片槽位 1 是空的")
        screenshot(page, "studio-zh-CN")

        page.get_by_label("编辑", exact=True).check()
        expect(page.locator("#preset-info")).to_contain_text("说明要在图 1 中改动什么")
        expect(page.locator("#image-1")).to_contain_text("图 1：要编辑的图片")


def test_an_english_browser_gets_the_studio_in_english(studio_url):
    with open_page(studio_url, "en-US") as page:
        expect(page.locator("#generate")).to_have_text("Generate")
        expect(page.locator("#prompt")).to_contain_text("Prompt")
        expect(page.locator("#preset")).to_contain_text("Text to image")
        expect(page.locator("#preset-info")).to_contain_text("Describe the picture")
        expect(page.locator("#model-header")).to_contain_text("device")
        expect(page.locator("#model-header")).to_contain_text("What you leave out is drawn large")
        press_generate_with_a_missing_picture(page)
        expect(page.locator(".toast-body").first).to_contain_text(
            "The prompt uses <|image_1|> but image slot 1 is empty")
        assert "生成" not in page.locator("body").inner_text()
