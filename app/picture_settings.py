"""Settings from a picture, shown on the page: the Markdown report of what omnigen.png.picture_settings found in a
picture's record (what will be restored, which pictures to supply, adapters, what was ignored).
"""

from __future__ import annotations

import html
import re

from omnigen.png import PictureSettings

from .i18n import language, translate


def plain(text: str) -> str:
    """Text from a picture, shown as text: no HTML, no Markdown (a forged record may hold either)."""
    return html.escape(re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text), quote=False)


def describe(found: PictureSettings, loaded: dict[str, float], lang: str | None = None) -> str:
    """Markdown for the page, in the request's language (or `lang`): what will be restored, which pictures to
    supply, adapters, what was ignored."""
    tr = lambda key, **values: translate(key, lang=lang or language(), **values)  # noqa: E731
    lines = [tr("picture_found_prompt" if found.prompt is not None else "picture_found_no_prompt",
                count=len(found.settings))]
    n = found.num_input_images
    if n:
        slots = ", ".join(f"{tr('image_word')} {k}" for k in range(1, n + 1))
        lines.append(tr("picture_inputs" if n > 1 else "picture_input_one", count=n, slots=slots))
    else:
        lines.append(tr("picture_no_inputs"))
    if found.loras:
        used = ", ".join(tr("picture_adapter_at", name=plain(name), scale=f"{scale:g}")
                         for name, scale in found.loras.items())
        missing = [plain(name) for name in found.loras if name not in loaded]
        lines.append(tr("picture_adapters", used=used) + (
            " " + tr("picture_adapters_missing", missing=", ".join(missing)) if missing else ""))
    if found.ignored:
        lines.append(tr("picture_ignored") + "\n" + "\n".join(f"- {plain(tr(item)[:300])}"
                                                               for item in found.ignored[:20]))
    return "\n\n".join(lines)
