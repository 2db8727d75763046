"""Every text a page of the studio can show, found in English and in Chinese.

What the page shows comes from three places, each listed here: keys of app/i18n_en.py and app/i18n_zh.py, named
in the code (t("key"), text("key"), tr("key"), translate("key")); literals passed straight to what the page shows
(a label, an info line, a Markdown or a message), which must not exist; and the library's sentences that reach the
page, which the Chinese page shows through app/i18n.py's templates. The API's widgets (app/*api.py) are English by
design: their labels are parameter names.
"""

import ast
import re
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from app.i18n import EN, ZH, translate
from app.picture_settings import describe
from omnigen.png import NoSettings, picture_settings, save_png

ROOT = Path(__file__).resolve().parent.parent
KEY_FUNCTIONS = {"t", "t_then", "text", "tr", "translate"}
SHOWN_ARGUMENTS = {"label", "info", "placeholder"}  # a component's visible text
SHOWN_CALLS = {"Markdown", "Button", "Error", "Warning", "Info", "HTML", "DownloadButton", "UploadButton"}
NAMES = {"# OmniGen Studio"}  # shown as they are in every language
# The Train tab's sample captions, which are being moved to keys with the rest of its texts.
PENDING: set[tuple[str, str]] = set()
ENGLISH_WORDS = re.compile(r"[A-Za-z]{2,}(?:\W+[A-Za-z]{2,}){2,}")  # three words in a row
ENGLISH_LABEL = re.compile(r"[A-Za-z]{2,}\W+[A-Za-z]{2,}|^[A-Z][a-z]+$")  # two words, or one capitalised
HAN = re.compile(r"[\u4e00-\u9fff]")


def page_modules() -> list[Path]:
    return sorted(p for p in (ROOT / "app").glob("*.py") if not p.name.endswith("api.py")
                  and not p.name.startswith("i18n"))


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            yield name, node


def literal(node) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value for part in node.values if isinstance(part, ast.Constant))
    return None


def test_every_key_the_code_names_has_english_and_chinese():
    missing = []
    for path in page_modules() + [ROOT / "app" / "api.py"]:
        for name, node in calls(path):
            if name in KEY_FUNCTIONS and node.args and isinstance(node.args[0], ast.Constant):
                key = node.args[0].value
                if isinstance(key, str) and re.fullmatch(r"[a-z0-9_]+", key) and not (key in EN and key in ZH):
                    missing.append(f"{path.name}:{node.lineno} {key}")
    assert not missing, missing


def test_no_page_shows_an_english_literal():
    found = []
    for path in page_modules():
        for name, node in calls(path):
            shown = [kw.value for kw in node.keywords if kw.arg in SHOWN_ARGUMENTS]
            if name in SHOWN_CALLS and node.args:
                shown.append(node.args[0])
            for value in shown:
                words = literal(value)
                pending = (path.name, words) in PENDING
                if words and words not in NAMES and not pending and ENGLISH_LABEL.search(words):
                    found.append(f"{path.name}:{node.lineno} {words[:60]!r}")
    assert not found, "English shown without a key:\n" + "\n".join(found)


# ----------------------------------------------------------------------------- settings from a picture


def png_with(tmp_path: Path, text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("omnigen", text)
    path = tmp_path / f"{abs(hash(text))}.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def no_english_sentence(text: str) -> bool:
    return not ENGLISH_WORDS.search(re.sub(r"`[^`]*`|\{[^}]*\}", "", text))


def test_the_settings_from_a_picture_report_is_chinese_on_a_chinese_page(tmp_path):
    forged = {"seed": -5, "height": 1000, "guidance_start": 0.9, "guidance_end": 0.2, "prompt": 7,
              "num_input_images": 9, "preset": "nope", "loras": ["x"], "made_up": 1, "sampler": "euler"}
    found = picture_settings(png_with(tmp_path, __import__("json").dumps(forged)), max_side=1024)
    assert len(found.ignored) >= 7
    chinese = describe(found, {}, lang="zh-CN")
    assert no_english_sentence(chinese), chinese
    assert "Ignored" in describe(found, {}, lang="en")
    good = save_png(Image.new("RGB", (8, 8)), tmp_path / "good.png",
                    {"seed": 1, "prompt": "a red circle", "num_input_images": 2, "loras": {"style": 0.5}})
    report = describe(picture_settings(good), {}, lang="zh-CN")
    assert no_english_sentence(report.replace("a red circle", "")) and "图 1, 图 2" in report


@pytest.mark.parametrize("content", [b"not a png", None, b"[1, 2]", b"{bad json", b"\xff\xfe"])
def test_why_a_picture_has_no_settings_is_said_in_chinese(tmp_path, content):
    path = tmp_path / "x.png"
    if content == b"not a png":
        path.write_bytes(content)
    elif content is None:
        Image.new("RGB", (8, 8)).save(path)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("omnigen", content.decode("latin-1"))
        Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with pytest.raises(NoSettings) as refused:
        picture_settings(path)
    shown = translate(str(refused.value), lang="zh-CN")
    assert HAN.search(shown) and no_english_sentence(shown), shown
