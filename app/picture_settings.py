"""Settings from a picture, shown on the page: the Markdown report of what omnigen.png.picture_settings found in a
picture's record (what will be restored, which pictures to supply, adapters, what was ignored).
"""

from __future__ import annotations

import html
import re

from omnigen.png import PictureSettings


def plain(text: str) -> str:
    """Text from a picture, shown as text: no HTML, no Markdown (a forged record may hold either)."""
    return html.escape(re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text), quote=False)


def describe(found: PictureSettings, loaded: dict[str, float]) -> str:
    """Markdown for the page: what will be restored, which pictures to supply, adapters, what was ignored."""
    lines = [f"**Settings found**: the prompt and {len(found.settings)} settings can be restored."
             if found.prompt is not None else
             f"**Settings found**: {len(found.settings)} settings can be restored (no usable prompt)."]
    n = found.num_input_images
    if n:
        slots = ", ".join(f"image {k}" for k in range(1, n + 1))
        lines.append(f"It was made from **{n} input picture{'s' if n > 1 else ''}** ({slots}): the settings do not "
                     "hold pictures, so put the same ones in those slots yourself.")
    else:
        lines.append("It was made from the prompt alone (no input pictures).")
    if found.loras:
        used = ", ".join(f"{plain(name)} at {scale:g}" for name, scale in found.loras.items())
        missing = [plain(name) for name in found.loras if name not in loaded]
        lines.append(f"Adapters it used: {used}." + (f" Not loaded now: {', '.join(missing)}; load them under "
                                                      "Adapters for the same picture." if missing else ""))
    if found.ignored:
        lines.append("**Ignored** (not valid here):\n" + "\n".join(f"- {plain(item[:300])}" for item in found.ignored[:20]))
    return "\n\n".join(lines)
