"""The studio page: a header, the Generate tab (app/generate_tab.py), the Grid and Batch tabs (app/grid_tab.py,
app/batch_tab.py; Batch is off on a Space unless the host turns it on), any extra tabs, and the hidden API endpoints.

    demo = build_app(studio, extra_tabs=[build_train_tab])   # each builder: (studio) -> None, makes a gr.Tab
    demo.launch(**launch_options(studio))

Every handler of the page turns widget values into one call on app.engine (which calls omnigen) and the answer
back into widget values. Errors a user can cause come back as gr.Error sentences, never stack traces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from . import history as hist
from .adapters_ui import adapter_view, view_outputs
from .api import build_api_endpoints
from .batch_tab import batch_enabled, build_batch_tab
from .engine import Studio, set_studio
from .generate_tab import build_generate_tab, history_note
from .grid_tab import build_grid_tab
from .i18n import I18N, language, t, translator
from .presets_ui import preset_page_texts
from .prompt_ui import render_prompt

TabBuilder = Callable[[Studio], None]

CSS = """
#prompt-preview .prompt-render { padding: 8px 10px; border: 1px dashed var(--border-color-primary);
  border-radius: 8px; line-height: 2.4em; }
#prompt-preview .prompt-image { display: inline-block; white-space: nowrap; }
#prompt-preview .prompt-image img { display: inline-block; height: 40px; vertical-align: middle;
  border-radius: 4px; border: 1px solid var(--border-color-primary); margin: 0; }
#prompt-preview .prompt-image sup { font-weight: bold; margin-left: 1px; }
#prompt-preview .prompt-missing { background: #fde2e2; color: #a00; padding: 2px 6px; border-radius: 4px; }
#prompt-preview .prompt-problems { color: #b00020; margin: 6px 0 0 0; }
#prompt-preview .prompt-ok { color: #2e7d32; margin-top: 6px; }
.slot-buttons button { min-width: 0 !important; padding: 2px 6px !important; white-space: nowrap; }
/* Small results are shown large and sharp: nearest-neighbour upscaling for display only (downloads are the PNG). */
#results img, #preview img, #history img, #before-after img, #picture-drop img { image-rendering: pixelated; }
#preview img, #picture-drop img { width: 100%; height: 100%; object-fit: contain; }
#results img, #history img { object-fit: contain !important; }
#grid-cells img, #grid-image img, #batch-results img { image-rendering: pixelated; object-fit: contain !important; }
"""


# ----------------------------------------------------------------------------- the app


def build_app(studio: Studio, extra_tabs: Sequence[TabBuilder] = ()) -> gr.Blocks:
    """The whole page. Extra tab builders (e.g. LoRA training) each add their own gr.Tab; GPU work in them
    should use concurrency_id=app.engine.GPU_QUEUE so it queues behind generation."""
    set_studio(studio)
    # Uploads (faces, private pictures) are removed from Gradio's cache a day after they arrive.
    with gr.Blocks(title="OmniGen Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# OmniGen Studio")
        header = gr.Markdown(studio.header(), elem_id="model-header")
        with gr.Tabs():
            with gr.Tab(t("tab_generate"), id="generate") as generate_tab:
                page, shown = build_generate_tab(studio)
            build_grid_tab(studio, page, shown)
            if batch_enabled():
                build_batch_tab(studio, page, shown)
            for builder in extra_tabs:
                builder(studio)
        build_api_endpoints(studio)
        # The adapter list is the pipeline's: another tab (Train's "Use in Generate tab") or page may change it.
        adapters = view_outputs(page["adapters"])
        generate_tab.select(lambda: adapter_view(studio), None, adapters, api_visibility="private", queue=False)
        demo.load(make_page_opener(studio), shown["browser"],
                  [shown["browser"], shown["history_gallery"], *adapters], api_visibility="private")
        # The page translates labels itself; texts made on the server with values follow the browser's language.
        demo.load(make_page_localizer(studio), [page["preset"], page["prompt"], *page["slots"]],
                  [header, page["preset_info"], page["examples"], page["prompt_view"], shown["history_info"]],
                  api_visibility="private", queue=False)
    return demo


def make_page_opener(studio: Studio) -> Callable:
    """On page load: this browser's id (a new random one the first time) and its history, and the adapters."""

    def open_page(browser: str | None):
        browser = hist.valid_browser(browser) or hist.new_browser_id()
        return [browser, hist.gallery_value(studio.history.entries(browser)), *adapter_view(studio)]

    return open_page


def make_page_localizer(studio: Studio) -> Callable:
    """On page load: the texts the server makes with values, in the browser's language."""

    def localize(request: gr.Request, preset: str, prompt: str, *images: str | None):
        tr = translator(request)
        dtype = str(studio.pipe.dtype).replace("torch.", "")
        header = tr("model_header", model=studio.model_name, device=studio.pipe.device, dtype=dtype,
                    size=studio.pipe.native_size) + studio.prompt_guide(language(request))
        info, examples = preset_page_texts(preset or "text_to_image", request)
        return header, info, examples, render_prompt(prompt, images, request), history_note(studio, request)

    return localize


def launch_options(studio: Studio, max_file_size: str | int = "20mb", share: bool = False) -> dict[str, Any]:
    """launch() arguments: no run history (uploads may be private), only the output folder served, an
    upload size limit, the page's style and its texts in English and Chinese (app/i18n.py). Errors other than
    gr.Error show as a bare 'Error' (show_error off), so nothing internal reaches the page."""
    # No server-side rendering: it starts a Node server (seconds of startup) for a page that needs none.
    return dict(run_history=False, allowed_paths=[str(studio.output_dir)],
                blocked_paths=[str(studio.history.private)], max_file_size=max_file_size, share=share, css=CSS,
                ssr_mode=False, i18n=I18N)
