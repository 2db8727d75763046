"""The studio's English and Chinese texts: the same keys in both, every preset, setting and example named in both,
and the library's messages rendered in Chinese for a Chinese browser (English otherwise)."""

import re
from types import SimpleNamespace

import pytest

from app.i18n import EN, I18N, ZH, language_of, text, translate
from app.jobs import PipelineBusy, PipelineUse
from app.prompt_editing import image_problems
from omnigen.errors import out_of_memory_message, sentence
from omnigen.presets import PRESETS, load_examples
from omnigen.settings import GenerationSettings, Limits, parse_value, setting_fields

CHINESE = SimpleNamespace(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})
ENGLISH = SimpleNamespace(headers={"accept-language": "en-US,en;q=0.9"})
HAN = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")  # Chinese characters and punctuation
# Texts that are the same in Chinese: names and examples typed as they are.
SAME_IN_CHINESE = {"adapter_hub_tab", "adapter_hub_placeholder", "preset_tip", "train_instruction_placeholder",
                   "setting_schedule_choice_sigmoid"}


def fields_of(template: str) -> set[str]:
    return set(re.findall(r"{(\w*)}", template))


# Gradio's own texts are looked up by the same function: a key equal to one of its namespaces would show its
# dictionary ("[object Object]") instead of our text.
GRADIO_NAMESPACES = {"3D_model", "annotated_image", "audio", "blocks", "checkbox", "code", "color_picker", "common",
                     "dataframe", "dropdown", "errors", "file", "highlighted_text", "image", "label", "login", "number",
                     "plot", "radio", "slider", "upload_text", "video", "chatbot", "_name"}


def test_no_key_is_one_of_gradios_namespaces():
    assert GRADIO_NAMESPACES & set(EN) == set()


def test_every_english_key_has_chinese_and_back():
    assert set(EN) - set(ZH) == set(), "English keys without Chinese"
    assert set(ZH) - set(EN) == set(), "Chinese keys without English"
    assert I18N.translations_dict["en"] is EN and I18N.translations_dict["zh-CN"] is ZH


@pytest.mark.parametrize("key", sorted(EN))
def test_each_chinese_text_is_chinese_with_the_same_fields(key):
    assert ZH[key].strip(), key
    assert fields_of(ZH[key]) == fields_of(EN[key]), key
    if key not in SAME_IN_CHINESE:
        assert HAN.search(ZH[key]), f"{key}: {ZH[key]!r} has no Chinese"


def test_every_preset_is_named_described_and_labelled_in_both():
    for name, preset in PRESETS.items():
        keys = [f"preset_{name}_title", f"preset_{name}_description"]
        keys += [f"preset_{name}_image_{k}" for k in range(1, preset.num_images + 1)]
        for key in keys:
            assert key in EN and key in ZH, key
        assert EN[f"preset_{name}_title"] == preset.title
    assert text("preset_edit_title", lang="zh-CN") == "编辑"


def test_every_setting_has_a_label_and_help_in_both():
    for spec in setting_fields():
        for part in ("label", "help"):
            key = f"setting_{spec.name}_{part}"
            assert EN[key] == spec.metadata[part] and HAN.search(ZH[key]), key
    assert ZH["setting_negative_prompt_label"] == "负面提示词"
    assert ZH["setting_num_inference_steps_label"] == "步数"


def test_every_example_title_is_in_both():
    titles = [(name, example.title) for name, examples in load_examples().items() for example in examples]
    assert titles
    keys = [f"example_{name}_{re.sub(r'[^a-z0-9]+', '_', title.lower()).strip('_')}" for name, title in titles]
    assert all(key in EN and key in ZH for key in keys)


@pytest.mark.parametrize("header, expected", [
    ("zh-CN,zh;q=0.9", "zh-CN"), ("zh-TW,zh;q=0.9,en;q=0.8", "zh-CN"), ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en;q=0.5,zh-CN", "zh-CN"), ("fr-FR,fr", "en"), ("", "en"), (None, "en")])
def test_the_language_is_the_browsers_first_choice(header, expected):
    assert language_of(header) == expected


def refusal(call) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return sentence(str(caught.value))


def test_settings_messages_in_chinese():
    cases = {
        refusal(lambda: parse_value("height", 0)): "高度（height）至少为 16，当前为 0。",
        refusal(lambda: parse_value("seed", -1)): "种子（seed）必须在 0 到 9223372036854775807 之间，当前为 -1。",
        refusal(lambda: parse_value("width", 17)): "宽度（width）为 17，不是 16 的倍数；请改用 16 或 32。",
        refusal(lambda: parse_value("num_inference_steps", 2.5)): "步数（num_inference_steps）必须是整数，当前为 2.5。",
        refusal(lambda: parse_value("sampler", "fast")):
            "采样器（sampler）必须是以下之一：euler, heun, midpoint, dpmpp_2m，当前为 'fast'。",
    }
    for english, chinese in cases.items():
        assert translate(english, CHINESE) == chinese
        assert translate(english, ENGLISH) == english


def test_prompt_and_placeholder_messages_in_chinese():
    problems = image_problems("<img><|image_1|></img> a cat", [None, None])
    assert translate(problems[0], CHINESE) == ("提示词使用了 <|image_1|>，但图片槽位 1 是空的：请在该槽位上传图片，"
                                               "或删除该标记。")
    unused = image_problems("a cat", ["a.png"])
    assert translate(unused[0], CHINESE).startswith("已上传图 1，但提示词没有使用它")
    assert translate("error_prompt_empty", CHINESE) == "请先输入提示词（或选择一个预设任务或示例）。"
    assert translate("error_prompt_empty", ENGLISH) == EN["error_prompt_empty"]


def test_host_limit_memory_busy_and_cancel_messages_in_chinese():
    over = refusal(lambda: Limits.for_space().check("x", GenerationSettings(height=2048)))
    assert translate(over, CHINESE) == "输出尺寸（2048）超过了本服务器的上限 1024（max_image_side）；请调低。"
    memory = out_of_memory_message(GenerationSettings(width=512, height=512), 0, None)
    assert translate(memory, CHINESE).startswith("内存不足。请调低输出尺寸（当前 512x512）")
    use = PipelineUse()
    with use.exclusively("training the LoRA 'cats'"), pytest.raises(PipelineBusy) as busy:
        with use.generating():
            pass
    assert translate(str(busy.value), CHINESE) == "模型正忙（正在训练 LoRA 'cats'）；请等它完成后再生成，或在那里停止它。"
    assert text("status_cancelled_after", CHINESE, step=3) == "已在第 3 步后取消；未保存任何内容。"
    cancelled = "Cancelled: generation cancelled after step 3 of 8. Nothing was saved."
    assert translate(cancelled, CHINESE) == "已取消：生成在第 3 步（共 8 步）后停止。未保存任何内容。"


def test_an_unknown_message_stays_english():
    message = "Something nobody planned for happened."
    assert translate(message, CHINESE) == message
    assert translate("Image 2: " + message, CHINESE) == "图 2：" + message
