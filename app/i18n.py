"""The studio in English and Simplified Chinese: Gradio's i18n for what the page shows, and the server's own
translation for what handlers say (gr.Error, gr.Warning, status lines), chosen from the browser's language.

    label=t("prompt_label")                  # the page translates it (launch(i18n=I18N) sends the dictionaries)
    raise gr.Error(text("error_prompt_empty", request))      # a key, in the request's language
    raise gr.Error(translate(str(error), request))           # a library sentence: templates, else English

The texts live in app/i18n_en.py and app/i18n_zh.py under the same stable keys. The library (omnigen/) stays
English; its sentences that carry values are matched by the regular expressions below. The API (endpoint and
parameter names, return values) is English and never passes through here.

The page picks Chinese when the browser's language is zh-CN or zh-TW (Gradio's own locales; "zh" is registered so
zh-TW falls back to these texts); `language` applies the same rule to the request's Accept-Language.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from .i18n_en import EN, slug
from .i18n_zh import ZH

CHINESE = "zh-CN"
LANGUAGES = {"en": EN, CHINESE: ZH}
CHINESE_TAGS = ("zh-cn", "zh-tw", "zh-hans", "zh-sg")
I18N = gr.I18n(en=EN, **{CHINESE: ZH, "zh": ZH})


def t(key: str) -> gr.i18n.I18nData:
    """A text the page translates (a label, a button, a markdown value)."""
    if key not in EN:
        raise KeyError(f"no English text for {key!r} in app/i18n_en.py")
    return I18N(key)


def t_then(key: str, suffix: str) -> str:
    """A translated word, then plain text: t_then("image_word", " 2"). The page translates one key per string."""
    return str(t(key)) + suffix


def current_request(request: Any = None) -> Any:
    """The given request, else the one Gradio is handling in this thread (None outside an event)."""
    if request is not None:
        return request
    try:
        from gradio.context import LocalContext

        return LocalContext.request.get(None)
    except (ImportError, AttributeError, LookupError):
        return None


def language(request: Any = None) -> str:
    """"zh-CN" when the request's preferred language (Accept-Language) is Chinese as the page reads it, else "en"."""
    request = current_request(request)
    headers = getattr(request, "headers", None) or {}
    header = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    return language_of(header)


def language_of(accept_language: str | None) -> str:
    ranked = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag:
            ranked.append((-weight, position, tag.lower()))
    if not ranked:
        return "en"
    best = min(ranked)[2]
    return CHINESE if best.startswith(CHINESE_TAGS) else "en"


def text(key: str, request: Any = None, lang: str | None = None, **values: Any) -> str:
    """The text of `key` in the request's language (or `lang`), with its {fields} filled."""
    template = LANGUAGES[lang or language(request)].get(key) or EN[key]
    return template.format(**values) if values else template


def translate(key_or_message: str, request: Any = None, lang: str | None = None, **values: Any) -> str:
    """A key's text, or a message from the library in the request's language (English where no template fits)."""
    if key_or_message in EN:
        return text(key_or_message, request, lang, **values)
    lang = lang or language(request)
    if lang == "en":
        return key_or_message
    return translate_message(key_or_message, lang)


def translator(request: Any = None) -> Callable[..., str]:
    """translate() bound to one request's language: tr("status_step", step=1, total=4)."""
    lang = language(request)
    return lambda key_or_message, **values: translate(key_or_message, lang=lang, **values)


# ----------------------------------------------------------------------------- presets, settings, examples


def preset_title(name: str) -> gr.i18n.I18nData:
    return t(f"preset_{name}_title")


def setting_label(name: str, lang: str = "en") -> str:
    key = f"setting_{name}_label"
    return text(key, lang=lang) if key in EN else name


def image_label(label: str, lang: str) -> str:
    """What an image slot must show (a preset's label, or a few-shot example's), in `lang`."""
    if lang == "en":
        return label
    for key, english in EN.items():
        if key.startswith("preset_") and "_image_" in key and english == label:
            return text(key, lang=lang)
    found = re.fullmatch(r"example (\d+) (input|output)", label)
    if found:
        return text(f"fewshot_example_{found.group(2)}", lang=lang, i=found.group(1))
    return text("fewshot_query", lang=lang) if label == EN["fewshot_query"] else label


def variant_label(preset: str, label: str, lang: str) -> str:
    key = f"preset_{preset}_variant_{slug(label)}"
    return text(key, lang=lang) if key in EN else label


def example_title(preset: str, title: str, lang: str) -> str:
    key = f"example_{preset}_{slug(title)}"
    return text(key, lang=lang) if key in EN else title


def choice_pairs(name: str, choices: Sequence[str]) -> list[tuple[Any, str]]:
    """(label the page translates, value) for a setting's choices; names without a text stay as they are."""
    return [(t(key), choice) if (key := f"setting_{name}_choice_{choice}") in EN else (choice, choice)
            for choice in choices]


# ----------------------------------------------------------------------------- the library's sentences

_BUSY_WHAT = [
    (r"training the LoRA (?P<name>.+)", "正在训练 LoRA {name}"),
    (r"loading the LoRA (?P<name>.+)", "正在加载 LoRA {name}"),
    (r"changing the LoRA (?P<name>.+)", "正在修改 LoRA {name}"),
    (r"unloading the LoRA adapters", "正在卸载 LoRA 适配器"),
    (r"unloading the LoRA (?P<name>.+)", "正在卸载 LoRA {name}"),
    (r"changing offload to (?P<mode>.+)", "正在把 CPU 卸载方式改为 {mode}"),
]
_LIMIT_WHAT = {"the output size": "输出尺寸", "the max input image size": "输入图片最大尺寸",
               "the prompt's length": "提示词长度", "the number of input images": "输入图片数量",
               "the number of steps": "步数", "the number of images": "图片数量"}
_MEMORY_HINTS = [
    (r"the output size \(now (?P<size>\S+)\)", "调低输出尺寸（当前 {size}）"),
    (r"the max input image size \(now (?P<size>\d+)\)", "调低输入图片最大尺寸（当前 {size}）"),
    (r"the number of images \(now (?P<count>\d+)\)", "减少图片数量（当前 {count}）"),
    (r"guidance mode: 'separate' \(one guidance branch at a time\)", "把引导模式改为“逐个”（每次只计算一个引导分支）"),
    (r"offload: 'model' \(or 'sequential', slowest\)", "开启 CPU 卸载：“整个模型”（或最慢的“逐层”）"),
]
# (English sentence, Chinese template). Group names say how a value is shown: `setting` by its Chinese label,
# `message` translated in turn, `what`/`hints`/`options` through the tables above; the rest as they are.
MESSAGES_ZH = [
    (r"The prompt uses <\|image_(?P<k>\d+)\|> but there are only (?P<n>\d+) image slots; remove that tag\.",
     "提示词使用了 <|image_{k}|>，但只有 {n} 个图片槽位；请删除该标记。"),
    (r"The prompt uses <\|image_(?P<k>\d+)\|> but image slot \d+ is empty: upload a picture there or remove the tag\.",
     "提示词使用了 <|image_{k}|>，但图片槽位 {k} 是空的：请在该槽位上传图片，或删除该标记。"),
    (r"Image (?P<k>\d+) is uploaded but the prompt does not use it: insert its tag (?P<tag>\S+) or remove the image\.",
     "已上传图 {k}，但提示词没有使用它：请插入它的标记 {tag}，或移除该图片。"),
    (r"Image slot (?P<k>\d+) is empty but slot (?P<last>\d+) is not: fill the slots in order \(move image \d+ to "
     r"slot \d+\)\.", "图片槽位 {k} 是空的，但槽位 {last} 不是：请按顺序填充槽位（把图 {last} 移到槽位 {k}）。"),
    (r"Malformed image tag (?P<tag>.+?) in the prompt; write <img><\|image_k\|></img> with k = 1 for the first image, "
     r"2 for the second, \.\.\.\.?", "提示词中的图片标记 {tag} 格式不正确；请写成 <img><|image_k|></img>，第一张图 k = 1，"
     "第二张 k = 2，依此类推。"),
    (r"num_inference_steps must be at least (?P<n>\d+) with sampler (?P<sampler>\w+), got (?P<value>\d+); use more "
     r"steps or sampler euler\.?", "采样器 {sampler} 至少需要 {n} 步，当前步数为 {value}；请增加步数或改用 euler 采样器。"),
    (r"guidance_start \((?P<start>[^)]+)\) must be below guidance_end \((?P<end>[^)]+)\).*",
     "引导起始 t（{start}）必须小于引导结束 t（{end}）：引导只在 t 位于 [起始, 结束] 的步上进行，两者都在 0.0 到 1.0 之间；"
     "0.0 和 1.0 表示每一步都引导。"),
    (r"(?P<setting>\w+) must be between (?P<low>\S+) and (?P<high>\S+), got (?P<value>.+?)\.?",
     "{setting}必须在 {low} 到 {high} 之间，当前为 {value}。"),
    (r"(?P<setting>\w+) must be at least (?P<low>\S+), got (?P<value>.+?)\.?", "{setting}至少为 {low}，当前为 {value}。"),
    (r"(?P<setting>\w+) must be a whole number, got (?P<value>.+?)\.?", "{setting}必须是整数，当前为 {value}。"),
    (r"(?P<setting>\w+) must be a finite number, got (?P<value>.+?)\.?", "{setting}必须是有限的数值，当前为 {value}。"),
    (r"(?P<setting>\w+) must be a number, got (?P<value>.+?)\.?", "{setting}必须是数字，当前为 {value}。"),
    (r"(?P<setting>\w+) must be one of (?P<choices>.+), got (?P<value>.+?)\.?",
     "{setting}必须是以下之一：{choices}，当前为 {value}。"),
    (r"(?P<setting>\w+) must be true or false, got (?P<value>.+?)\.?", "{setting}必须是 true 或 false，当前为 {value}。"),
    (r"(?P<setting>\w+) must be text, got (?P<value>.+?)\.?", "{setting}必须是文本，当前为 {value}。"),
    (r"(?P<setting>\w+) (?P<value>\S+) is not a multiple of (?P<step>\d+); use (?P<options>.+?)\.?",
     "{setting}为 {value}，不是 {step} 的倍数；请改用 {options}。"),
    (r"(?P<setting>height|width) (?P<value>\d+) is larger than this model can draw \((?P<max>\d+) pixels, the size of "
     r"its position table\); use at most \d+\.?", "{setting}为 {value}，超出了该模型能绘制的范围（{max} 像素，即其位置表的大小）；"
     "最多使用 {max}。"),
    (r"(?P<what>.+?) \((?P<value>\d+)\) is over this server's limit of (?P<limit>\d+) \((?P<name>\w+)\); "
     r"ask for less\.?",
     "{what}（{value}）超过了本服务器的上限 {limit}（{name}）；请调低。"),
    (r"Out of memory\. Lower the output size or the number of images, or turn on offload\.",
     "内存不足。请调低输出尺寸或减少图片数量，或开启 CPU 卸载。"),
    (r"Out of memory\. Lower (?P<hints>.+)\.", "内存不足。请{hints}。"),
    (r"The model is busy (?P<what>.+?); generate when it has finished, or stop it there\.",
     "模型正忙（{what}）；请等它完成后再生成，或在那里停止它。"),
    (r"The model is busy (?P<what>.+?); wait until it has finished\.", "模型正忙（{what}）；请等它完成。"),
    (r"(?P<n>\d+) generation\(s\) are running; try again when they finish\.", "有 {n} 个生成任务正在运行；请等它们结束后再试。"),
    (r"A training \((?P<name>.+?)\) is already running; one runs at a time\. Wait for it to finish or press Stop\.",
     "已有一个训练（{name}）正在运行；同一时间只能运行一个。请等它完成，或按“停止”。"),
    (r"A training \((?P<name>.+?)\) is already running; one runs at a time\.(?: Wait for it to finish\.)?",
     "已有一个训练（{name}）正在运行；同一时间只能运行一个。请等它完成。"),
    (r"Cancelled: generation cancelled after step (?P<step>\d+) of (?P<total>\d+)\. Nothing was saved\.",
     "已取消：生成在第 {step} 步（共 {total} 步）后停止。未保存任何内容。"),
    (r"The latents stopped being finite at step (?P<step>\d+)/(?P<total>\d+):.*",
     "潜变量在第 {step}/{total} 步变成了非有限数值：模型的数值溢出了。请使用 dtype='float32' 或 'bfloat16' 代替 'float16'，"
     "或调低引导系数（guidance_scale）。"),
    (r"The model failed \((?P<kind>\w+)\)\. The server log has the details; try other settings\.",
     "模型运行失败（{kind}）。详情见服务器日志；请尝试其他设置。"),
    (r"At most (?P<n>\d+) input images, got (?P<got>\d+)\.?", "最多 {n} 张输入图片，当前为 {got} 张。"),
    (r"A mask was painted but there is no image 1 to edit; upload the picture first\.?",
     "绘制了蒙版，但没有可编辑的图 1；请先上传图片。"),
    (r"The mask is (?P<mask>\d+x\d+) pixels but image 1 is (?P<image>\d+x\d+); paint the mask on image 1 itself\.?",
     "蒙版为 {mask} 像素，但图 1 为 {image}；请直接在图 1 上绘制蒙版。"),
    (r"Image (?P<k>\d+): (?P<message>.+)", "图 {k}：{message}"),
    # settings from a picture (omnigen/png.py): why there are none, and what was ignored
    (r"This file is not a PNG: only PNGs made by OmniGen Studio \(the studio, the CLI or Python\) carry their "
     r"settings", "该文件不是 PNG：只有 OmniGen Studio（工作室、命令行或 Python）生成的 PNG 才带有设置"),
    (r"Its settings are (?P<size>[\d,]+) bytes, more than the (?P<limit>[\d,]+) a real record needs: refused unread",
     "其设置有 {size} 字节，超过了真实记录所需的 {limit} 字节：未读取，已拒绝"),
    (r"This picture carries no OmniGen settings \(it was not made by OmniGen Studio, or an editor removed its "
     r"metadata when it was saved or copied\)", "这张图片不带 OmniGen 设置（它不是由 OmniGen Studio 生成的，或者编辑器在保存"
     "或复制时删除了其元数据）"),
    (r"Its settings are not valid UTF-8 text", "其设置不是有效的 UTF-8 文本"),
    (r"Its settings chunk is damaged \(it does not decompress\)", "其设置块已损坏（无法解压）"),
    (r"Its settings inflate to more than (?P<limit>[\d,]+) bytes, more than a real record needs: refused",
     "其设置解压后超过 {limit} 字节，超过了真实记录所需：已拒绝"),
    (r"Its settings are not valid JSON \(the metadata was damaged or forged\)", "其设置不是有效的 JSON（元数据已损坏或被伪造）"),
    (r"Its settings are a JSON (?P<kind>\w+), not an object of named settings",
     "其设置是 JSON {kind}，而不是由具名设置组成的对象"),
    (r"unknown keys, not settings of this studio: (?P<keys>.+)", "未知的键，不是本工作室的设置：{keys}"),
    (r"prompt: longer than (?P<n>[\d,]+) characters", "提示词：超过 {n} 个字符"),
    (r"prompt: not text \((?P<kind>\w+)\)", "提示词：不是文本（{kind}）"),
    (r"num_input_images: not a whole number from 0 to (?P<n>\d+) \((?P<value>.*)\)",
     "输入图片数量（num_input_images）：不是 0 到 {n} 之间的整数（{value}）"),
    (r"preset: not one of this studio's presets \((?P<value>.*)\)", "预设：不是本工作室的预设之一（{value}）"),
    (r"loras: not a list of adapter names and strengths", "适配器（loras）：不是由适配器名称和强度组成的列表"),
    (r"all settings: (?P<message>.+)", "所有设置：{message}"),
    (r"(?P<setting>\w+): (?P<message>.+)", "{setting}：{message}"),
]
# The sentences of omnigen.grid, omnigen.batch and omnigen.composition that the Grid and Batch tabs and compositions
# show. A `source` is where a batch job was given ("line 3 of jobs.jsonl", "picture a.png"); `archive` a composition's
# file name; `json` the JSON parser's words; `detail` a reader's own words, left out (they name no fix).
EXPERIMENTS_ZH = [
    # grids: an axis and its values
    (r"the axis (?P<axis>\S+) has no values; write them separated by commas \(e\.g\. 1, 2, 3\)",
     "坐标轴 {axis} 没有取值；请用逗号分隔填写（例如 1, 2, 3）。"),
    (r"the axis (?P<axis>\S+) has no values; write them separated by commas \(e\.g\. 1, 2, 3\) or as a range "
     r"START\.\.END:COUNT", "坐标轴 {axis} 没有取值；请用逗号分隔填写（例如 1, 2, 3），或写成范围 起点..终点:个数（例如 1.5..3.5:3）。"),
    (r"(?P<name>.+?) cannot be an axis; choose one of (?P<names>.+?), image_K \(an input picture of slot K\) or "
     r"lora:NAME \(an adapter's strength\)",
     "{name} 不能作为坐标轴；请从 {names} 中选择，或用 image_K（槽位 K 的输入图片）、lora:NAME（某个适配器的强度）。"),
    (r"the axis (?P<axis>\S+): a range needs at least one value, got (?P<value>.+)",
     "坐标轴 {axis}：范围至少要有一个取值，当前为 {value}。"),
    (r"the axis (?P<axis>\S+): the prompt has (?P<n>\d+) input picture\(s\); vary image_(?P<next>\d+) or a lower "
     r"slot", "坐标轴 {axis}：提示词只有 {n} 张输入图片；请改变 image_{next} 或编号更小的槽位。"),
    (r"the axis (?P<axis>\S+): (?P<message>.+)", "坐标轴 {axis}：{message}"),
    (r"(?P<value>.+) is not an interval: write START-END, e\.g\. 0\.2-1\.0",
     "{value} 不是区间：请写成 起点-终点，例如 0.2-1.0。"),
    (r"the interval (?P<value>.+) must start below its end", "区间 {value} 的起点必须小于终点。"),
    (r"(?P<value>.+) is not a finite number", "{value} 不是有限的数值。"),
    (r"(?P<value>.+) is not a number", "{value} 不是数字。"),
    (r"the grid has (?P<count>\d+) cells \((?P<x>\d+) x (?P<y>\d+)\), over the limit of (?P<limit>\d+) "
     r"\(max_grid_cells\); use fewer values",
     "网格有 {count} 个单元格（{x} x {y}），超过了上限 {limit}（max_grid_cells）；请减少取值。"),
    (r"both axes are (?P<axis>\S+); choose two different axes", "两个坐标轴都是 {axis}；请选择两个不同的坐标轴。"),
    (r"the adapter (?P<name>.+) is not loaded any more \(another page unloaded it\)",
     "适配器 {name} 已不在加载状态（另一个页面卸载了它）。"),
    # batches: a jobs file, a folder of pictures
    (r"the jobs file (?P<file>.+) is not UTF-8 text: write one JSON object a line",
     "任务文件 {file} 不是 UTF-8 文本：请每行写一个 JSON 对象。"),
    (r"(?P<source>.+?) is not JSON \((?P<json>.+) at column (?P<column>\d+)\): write one object a line, e\.g\. "
     r"(?P<example>\{.*\})", "{source}：不是有效的 JSON（第 {column} 列：{json}）；请每行写一个对象，例如 {example}。"),
    (r"(?P<source>.+?) is not a JSON object: write \{\"prompt\": \.\.\.\}",
     "{source}：不是 JSON 对象，请写成 {{\"prompt\": ...}}。"),
    (r"(?P<source>.+?) has no prompt: give \"prompt\" as text", "{source}：没有提示词，请用文本给出 \"prompt\"。"),
    (r"(?P<source>.+?): \"images\" must be a list of file names", "{source}：\"images\" 必须是文件名的列表。"),
    (r"(?P<source>.+?) names the picture (?P<name>.+), which does not exist \(pictures are found relative to the "
     r"jobs file's folder, (?P<folder>.+)\)", "{source}：指定的图片 {name} 不存在（图片按任务文件所在的文件夹 {folder} "
     "查找）。"),
    (r"(?P<source>.+?): the name (?P<name>.+) is not a plain file name \(letters, digits, '\.', '-', '_'\)",
     "{source}：名称 {name} 不是普通的文件名（只能用字母、数字、'.'、'-' 和 '_'）。"),
    (r"(?P<source>.+?): unknown key\(s\) (?P<keys>.+); a job has prompt, images, name and any generation setting",
     "{source}：未知的键 {keys}；任务只能有 prompt、images、name 和各项生成设置。"),
    (r"(?P<source>.+?): a job makes one picture; write one line per picture \(with its own seed\)",
     "{source}：一个任务只生成一张图片；请每张图片写一行（各用自己的种子）。"),
    (r"give the instruction to apply to every picture, e\.g\. \"make the background white\"",
     "请写出对每张图片执行的指令，例如“把背景变成白色”。"),
    (r"(?P<folder>.+?) holds no pictures \((?P<suffixes>.+)\)", "{folder} 中没有图片（{suffixes}）。"),
    (r"(?P<folder>.+?) holds no jobs", "{folder} 中没有任务。"),
    (r"(?P<folder>.+?) holds (?P<n>\d+) jobs, over the limit of (?P<limit>\d+) \(max_batch_jobs\); split it",
     "{folder} 中有 {n} 个任务，超过了上限 {limit}（max_batch_jobs）；请分成几批。"),
    (r"(?P<source>.+?) and (?P<source2>.+?) both write (?P<name>.+?)\.png: give each a different \"name\"",
     "两个任务都会写入 {name}.png（{source}、{source2}）：请给它们各自不同的 \"name\"。"),
    (r"(?P<source>line \d+ of .+?|picture .+?): (?P<message>.+)", "{source}：{message}"),
    # compositions
    (r"(?P<archive>.+?) is not a composition: it has no composition\.json",
     "{archive} 不是组合文件：其中没有 composition.json。"),
    (r"(?P<archive>.+?) holds files its manifest does not name \((?P<files>.+)\): it is not a composition as the "
     r"studio writes them", "{archive} 含有清单中没有列出的文件（{files}）：它不是本工作室写出的组合文件。"),
    (r"(?P<archive>.+?) is not a readable zip file \((?P<detail>.*)\)", "{archive} 不是可读取的 zip 文件。"),
    (r"(?P<archive>.+?) is refused: (?P<names>.+) would land outside its folder \(absolute paths and '\.\.' are not "
     r"allowed in a composition\)", "{archive} 被拒绝：{names} 会被解压到其文件夹之外（组合文件中不允许绝对路径和 '..'）。"),
    (r"(?P<archive>.+?) is refused: (?P<names>.+) is a link", "{archive} 被拒绝：{names} 是链接。"),
    (r"(?P<archive>.+?) is refused: it holds a member over 64 MB; a composition is a manifest and at most "
     r"(?P<n>\d+) pictures", "{archive} 被拒绝：其中有超过 64 MB 的文件；组合文件只含一份清单和最多 {n} 张图片。"),
    (r"(?P<archive>.+?) is refused: it holds too many files; a composition is a manifest and at most (?P<n>\d+) "
     r"pictures", "{archive} 被拒绝：其中文件过多；组合文件只含一份清单和最多 {n} 张图片。"),
    (r"(?P<archive>.+?): composition\.json is not JSON \((?P<detail>.*)\)",
     "{archive}：composition.json 不是有效的 JSON。"),
    (r"(?P<archive>.+?): composition\.json is not a composition manifest \(format 'omnigen-composition'\)",
     "{archive}：composition.json 不是组合清单（格式应为 'omnigen-composition'）。"),
    (r"(?P<archive>.+?): composition version (?P<version>.+) is not one this version of omnigen reads "
     r"\((?P<known>\d+)\)", "{archive}：当前版本的 omnigen 无法读取组合版本 {version}（只能读取版本 {known}）。"),
    (r"(?P<archive>.+?): the manifest has unknown field\(s\) (?P<fields>.+)", "{archive}：清单中有未知字段 {fields}。"),
    (r"(?P<archive>.+?): the manifest's prompt is missing or not text", "{archive}：清单中的提示词缺失或不是文本。"),
    (r"(?P<archive>.+?): the manifest's images must be a list of \{file, sha256\}",
     "{archive}：清单中的 images 必须是由 {{file, sha256}} 组成的列表。"),
    (r"(?P<archive>.+?): the manifest's images name files outside images/, or one twice",
     "{archive}：清单中的 images 指向了 images/ 以外的文件，或把同一文件列了两次。"),
    (r"(?P<archive>.+?): the manifest's settings must be an object", "{archive}：清单中的 settings 必须是对象。"),
    (r"(?P<archive>.+?): the manifest's adapters must map names to strengths",
     "{archive}：清单中的 adapters 必须把名称映射到强度。"),
    (r"(?P<archive>.+?): the manifest's preset must be text", "{archive}：清单中的 preset 必须是文本。"),
    (r"(?P<archive>.+?): the prompt uses image\(s\) (?P<used>.+) but holds (?P<count>\d+) picture\(s\); image k of "
     r"the prompt is picture k", "{archive}：提示词用到的图片为 {used}，但其中有 {count} 张图片；提示词中的图 k 就是第 k 张图片。"),
    (r"(?P<archive>.+?): the manifest names (?P<file>.+), which the zip does not hold",
     "{archive}：清单列出了 {file}，但 zip 中没有这个文件。"),
    (r"(?P<archive>.+?): image (?P<k>\d+) \((?P<file>.+?)\) does not match its checksum: the file was changed after "
     r"it was saved", "{archive}：图 {k}（{file}）与其校验和不符：文件在保存后被改动过。"),
    (r"(?P<archive>.+?): image (?P<k>\d+) is (?P<size>\d+x\d+), over (?P<limit>[\d,]+) pixels",
     "{archive}：图 {k} 为 {size}，超过了 {limit} 像素。"),
    (r"(?P<archive>.+?): image (?P<k>\d+) \((?P<file>.+?)\) is not a readable picture \((?P<detail>.*)\)",
     "{archive}：图 {k}（{file}）不是可读取的图片。"),
    (r"(?P<archive>.+?): the manifest's settings name unknown setting\(s\) (?P<names>.+)",
     "{archive}：清单的设置中有未知的设置 {names}。"),
    (r"(?P<archive>.+?): the manifest's settings are not valid: (?P<message>.+)", "{archive}：清单中的设置无效：{message}"),
]
_SOURCES = [(r"line (?P<n>\d+) of (?P<file>.+)", "{file} 第 {n} 行"), (r"picture (?P<file>.+)", "图片 {file}")]
_JSON_SAYS = [(r"Expecting value", "此处应有一个值"), (r"Expecting '(?P<mark>.)' delimiter", "此处缺少 '{mark}'"),
              (r"Expecting property name enclosed in double quotes", "键名必须用双引号括起来"),
              (r"Extra data", "数据后面还有多余的内容"), (r"Unterminated string starting at", "字符串没有结束"),
              (r"Invalid control character at", "含有无效的控制字符"), (r"Invalid \\escape", "含有无效的转义"),
              (r"Invalid \\uXXXX escape", "含有无效的 \\uXXXX 转义"),
              (r"Illegal trailing comma before end of (object|array)", "末尾多了一个逗号")]
_COMPILED = [(re.compile(pattern, re.IGNORECASE | re.DOTALL), template)
             for pattern, template in EXPERIMENTS_ZH + MESSAGES_ZH]


def _shown_value(group: str, value: str, lang: str) -> str:
    if group == "setting":
        label = setting_label(value.lower(), lang)
        return f"{label}（{value.lower()}）" if label != value.lower() else value
    if group == "message":
        return translate_message(value, lang)
    if group == "what":
        return _LIMIT_WHAT.get(value.lower(), _from_table(_BUSY_WHAT, value))
    if group == "hints":
        return "；或".join(_from_table(_MEMORY_HINTS, hint) for hint in value.split("; or "))
    if group == "options":
        return value.replace(" or ", " 或 ")
    if group.startswith("source"):
        return _from_table(_SOURCES, value)
    if group == "json":
        return _from_table(_JSON_SAYS, value)
    if group == "archive" and value.lower() == "the composition":
        return "组合"
    if group == "used" and value == "none":
        return "（无）"
    return value


def _from_table(table: list[tuple[str, str]], value: str) -> str:
    for pattern, template in table:
        found = re.fullmatch(pattern, value, re.IGNORECASE)
        if found:
            return template.format(**found.groupdict())
    return value


def translate_message(message: str, lang: str) -> str:
    """A library sentence in `lang` by the first template whose pattern matches all of it; unchanged otherwise."""
    if lang == "en":
        return message
    stripped = message.strip()
    for pattern, template in _COMPILED:
        found = pattern.fullmatch(stripped)
        if found:
            return template.format(**{group: _shown_value(group, value or "", lang)
                                      for group, value in found.groupdict().items()})
    return message
