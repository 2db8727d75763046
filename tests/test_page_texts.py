"""Every text a page of the studio can show, found in English and in Chinese.

What the page shows comes from three places, each listed here: keys of app/i18n_en.py and app/i18n_zh.py, named
in the code (t("key"), text("key"), tr("key"), translate("key")); literals passed straight to what the page shows
(a label, an info line, a Markdown or a message), which must not exist; and the library's sentences that reach the
page, which the Chinese page shows through app/i18n.py's templates. The API's widgets (app/*api.py) are English by
design: their labels are parameter names.
"""

import ast
import hashlib
import io
import json
import re
import struct
import traceback
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from app.i18n import EN, ZH, translate
from app.picture_settings import describe
from omnigen.batch import BatchError, folder_jobs, read_jobs
from omnigen.composition import MANIFEST, Composition, CompositionError, load_composition, save_composition
from omnigen.errors import sentence
from omnigen.grid import GridError, axis_names, parse_axis, plan_cells
from omnigen.png import NoSettings, picture_settings, save_png
from omnigen.settings import GenerationSettings, setting_names

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
    found = picture_settings(png_with(tmp_path, json.dumps(forged)), max_side=1024)
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


# ----------------------------------------------------------------------------- grids, batches and compositions
# Every sentence omnigen.grid, omnigen.batch and omnigen.composition raise is made here for real and read on a
# Chinese page; a raise that no case makes fails the test, unless it is listed as one the studio never reaches.

LIBRARY = {name: ROOT / "omnigen" / f"{name}.py" for name in ("grid", "batch", "composition")}
# (module, function, words of its message): reached from Python or the command line only. The studio loads the
# adapters a grid or a composition needs itself, and reads only files and folders it has just written.
NOT_FROM_THE_PAGE = {("grid", "run_grid", ""), ("composition", "generate", ""), ("batch", "process_group", ""),
                     ("batch", "read_jobs", "does not exist"), ("batch", "folder_jobs", "is not a folder"),
                     ("composition", "load_composition", "does not exist")}
TYPED_NAMES = set(axis_names()) | set(setting_names())  # shown as they are typed, in every language


def raise_sites(module: str) -> dict[int, str]:
    """Line -> 'function: words' of every raise statement with an exception in omnigen/<module>.py."""
    sites = {}
    for function in ast.walk(ast.parse(LIBRARY[module].read_text(encoding="utf-8"))):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    words = " ".join(literal(a) or "" for a in node.exc.args)
                    sites[node.lineno] = f"{function.name}: {words}"
    return sites


def raised_at(error: BaseException) -> set[tuple[str, int]]:
    """(module, line) of the raise statements of the library that made `error` and the errors it wraps."""
    found = set()
    while error is not None:
        frames = [(frame.f_code.co_filename, line) for frame, line in traceback.walk_tb(error.__traceback__)]
        for module, path in LIBRARY.items():
            if frames and frames[-1][0] == str(path):
                found.add((module, frames[-1][1]))
        error = error.__context__
    return found


def chinese_sentence(text: str) -> bool:
    """Chinese, with no English sentence left once quoted values, file names and typed names are taken out."""
    bare = re.sub(r"'[^']*'|\"[^\"]*\"|\{[^}]*\}|\S*[./\\]\S+", "", text)
    bare = re.sub(r"\b(%s)\b" % "|".join(sorted(TYPED_NAMES, key=len, reverse=True)), "", bare)
    return bool(HAN.search(text)) and no_english_sentence(bare)


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def png_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png() -> bytes:
    """A 1x1 PNG whose header says 7000x7000 (its checksum made to fit): too many pixels, and cheap to make."""
    data = bytearray(png_bytes((1, 1)))
    data[16:24] = struct.pack(">II", 7_000, 7_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def composition_zip(path: Path, pictures: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None,
                    **manifest_changes) -> Path:
    """A composition file with one picture (or `pictures` by member name), its manifest changed as asked."""
    pictures = {"images/1.png": png_bytes()} if pictures is None else pictures
    entries = [{"file": name, "sha256": hashlib.sha256(data).hexdigest()} for name, data in pictures.items()]
    manifest = {"format": "omnigen-composition", "version": 1, "prompt": "<img><|image_1|></img> paint it blue",
                "images": entries, "settings": {"seed": 1}, "adapters": {}, "preset": "edit", **manifest_changes}
    return zip_with(path, {MANIFEST: json.dumps(manifest).encode(), **pictures, **(extra or {})})


def over_sized_member(path: Path) -> Path:
    """A composition zip whose picture says (in the zip's directory) that it unpacks to 65 MB."""
    composition_zip(path)
    data = bytearray(path.read_bytes())
    for start in [m.start() for m in re.finditer(b"PK\x01\x02", bytes(data))][1:]:  # the picture's entry
        data[start + 24:start + 28] = struct.pack("<I", 65 << 20)
    path.write_bytes(bytes(data))
    return path


def link_member(path: Path) -> Path:
    composition_zip(path)
    with zipfile.ZipFile(path, "a") as zipped:
        info = zipfile.ZipInfo("images/2.png")
        info.external_attr = (0o120777 << 16)
        zipped.writestr(info, "/etc/passwd")
    return path


def jobs(tmp_path: Path, *lines: str, limit: int | None = None) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    read_jobs(path, limit)


def pictures_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(png_bytes())
    return folder


S = GenerationSettings(num_inference_steps=3, width=64, height=64)
REFUSALS = {
    "no values": lambda tmp: parse_axis("seed", " "),
    "no prompts": lambda tmp: parse_axis("prompt", " | "),
    "not an axis": lambda tmp: parse_axis("colour", "red"),
    "empty range": lambda tmp: parse_axis("seed", "1..5:0"),
    "not an interval": lambda tmp: parse_axis("guidance_interval", "0.5"),
    "backwards interval": lambda tmp: parse_axis("guidance_interval", "0.9-0.2"),
    "strength not a number": lambda tmp: parse_axis("lora:style", "strong"),
    "strength not finite": lambda tmp: parse_axis("lora:style", "inf"),
    "setting out of range": lambda tmp: parse_axis("seed", "-1"),
    "too many cells": lambda tmp: plan_cells("p", [], S, parse_axis("seed", "0..9:10"), max_cells=4),
    "the same axis twice": lambda tmp: plan_cells("p", [], S, parse_axis("seed", "1, 2"), parse_axis("seed", "3")),
    "a slot past the pictures": lambda tmp: plan_cells("p", [], S, parse_axis("image_3", "a.png")),
    "jobs not UTF-8": lambda tmp: (tmp / "jobs.jsonl").write_bytes(b"\xff\xfe{}") and read_jobs(tmp / "jobs.jsonl"),
    "line not JSON": lambda tmp: jobs(tmp, '{"prompt": "a red circle",'),
    "line not an object": lambda tmp: jobs(tmp, "[1, 2]"),
    "line without a prompt": lambda tmp: jobs(tmp, '{"seed": 1}'),
    "images not names": lambda tmp: jobs(tmp, '{"prompt": "p", "images": [1]}'),
    "a missing picture": lambda tmp: jobs(tmp, '{"prompt": "p", "images": ["gone.png"]}'),
    "a name with a slash": lambda tmp: jobs(tmp, '{"prompt": "p", "name": "a/b"}'),
    "an unknown key": lambda tmp: jobs(tmp, '{"prompt": "p", "colour": "red"}'),
    "a bad setting": lambda tmp: jobs(tmp, '{"prompt": "p", "seed": -1}'),
    "two pictures a line": lambda tmp: jobs(tmp, '{"prompt": "p", "num_images_per_prompt": 2}'),
    "no jobs": lambda tmp: jobs(tmp, "", " "),
    "too many jobs": lambda tmp: jobs(tmp, '{"prompt": "a"}', '{"prompt": "b"}', limit=1),
    "one name twice": lambda tmp: jobs(tmp, '{"prompt": "a", "name": "x"}', '{"prompt": "b", "name": "x"}'),
    "no instruction": lambda tmp: folder_jobs(pictures_folder(tmp, "a.png"), " "),
    "no pictures": lambda tmp: folder_jobs(pictures_folder(tmp), "make it blue"),
    "not a zip": lambda tmp: (tmp / "x.zip").write_bytes(b"not a zip") and load_composition(tmp / "x.zip"),
    "no manifest": lambda tmp: load_composition(zip_with(tmp / "x.zip", {"notes.txt": b"hi"})),
    "an unnamed member": lambda tmp: load_composition(composition_zip(tmp / "x.zip", extra={"images/9.png": b"x"})),
    "an escaping member": lambda tmp: load_composition(zip_with(tmp / "x.zip", {"../evil.png": b"x"})),
    "a link": lambda tmp: load_composition(link_member(tmp / "x.zip")),
    "too many members": lambda tmp: load_composition(zip_with(tmp / "x.zip", {f"{k}.png": b"" for k in range(20)})),
    "a huge member": lambda tmp: load_composition(over_sized_member(tmp / "x.zip")),
    "manifest not JSON": lambda tmp: load_composition(zip_with(tmp / "x.zip", {MANIFEST: b"{"})),
    "another format": lambda tmp: load_composition(composition_zip(tmp / "x.zip", format="zip")),
    "another version": lambda tmp: load_composition(composition_zip(tmp / "x.zip", version=9)),
    "an unknown field": lambda tmp: load_composition(composition_zip(tmp / "x.zip", colour="red")),
    "no prompt": lambda tmp: load_composition(composition_zip(tmp / "x.zip", prompt=" ")),
    "images not entries": lambda tmp: load_composition(composition_zip(tmp / "x.zip", images=[1])),
    "images outside": lambda tmp: load_composition(composition_zip(tmp / "x.zip", images=[
        {"file": "other/1.png", "sha256": "0"}])),
    "settings not an object": lambda tmp: load_composition(composition_zip(tmp / "x.zip", settings=[1])),
    "adapters not strengths": lambda tmp: load_composition(composition_zip(tmp / "x.zip", adapters={"a": "x"})),
    "preset not text": lambda tmp: load_composition(composition_zip(tmp / "x.zip", preset=3)),
    "prompt without its picture": lambda tmp: load_composition(composition_zip(tmp / "x.zip", pictures={})),
    "saved without its picture": lambda tmp: save_composition(tmp / "x.zip", Composition("<img><|image_1|></img> p")),
    "a named member missing": lambda tmp: load_composition(composition_zip(
        tmp / "x.zip", pictures={}, images=[{"file": "images/1.png", "sha256": "0"}])),
    "a changed picture": lambda tmp: load_composition(composition_zip(
        tmp / "x.zip", images=[{"file": "images/1.png", "sha256": "0"}])),
    "a huge picture": lambda tmp: load_composition(composition_zip(tmp / "x.zip", {"images/1.png": huge_png()})),
    "not a picture": lambda tmp: load_composition(composition_zip(tmp / "x.zip", {"images/1.png": b"not a png"})),
    "an unknown setting": lambda tmp: load_composition(composition_zip(tmp / "x.zip", settings={"colour": 1})),
    "a bad saved setting": lambda tmp: load_composition(composition_zip(tmp / "x.zip", settings={"seed": -1})),
}


def refused(case: str, tmp_path: Path) -> BaseException:
    with pytest.raises((GridError, BatchError, CompositionError)) as caught:
        REFUSALS[case](tmp_path)
    return caught.value


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_of_a_grid_batch_or_composition_is_chinese_on_a_chinese_page(case, tmp_path):
    english = sentence(str(refused(case, tmp_path)))
    chinese = translate(english, lang="zh-CN")
    assert chinese_sentence(chinese), f"{english!r} is shown as {chinese!r}"
    assert translate(english, lang="en") == english


def test_every_refusal_of_a_grid_batch_or_composition_is_listed(tmp_path):
    made = set()
    for number, case in enumerate(REFUSALS):
        folder = tmp_path / str(number)
        folder.mkdir()
        made |= raised_at(refused(case, folder))
    missing = [f"omnigen/{module}.py:{line} {words}" for module in LIBRARY
               for line, words in raise_sites(module).items() if (module, line) not in made
               and not any(m == module and words.startswith(f"{f}:") and w in words for m, f, w in NOT_FROM_THE_PAGE)]
    assert not missing, "raised with no case in REFUSALS (add one, and its Chinese in app/i18n.py):\n" + "\n".join(
        missing)
