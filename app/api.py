"""Named API endpoints with plain inputs, for gradio_client and HTTP users.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    gallery, settings = client.predict("<img><|image_1|></img> make the red circle green",
                                       image_1=handle_file("scene.png"), use_input_image_size_as_output=1,
                                       seed=3, api_name="/generate")

/generate takes a prompt, up to five image files (image k of the prompt is image_k), an optional mask
file (white where an edit of image 1 may change pixels) and the settings; it returns the images (PNG,
settings in their metadata) and the list of their settings. /condition turns a picture into an edge map
('canny') or a flat depth map ('silhouette'). The widgets live in a hidden column: they only give the
endpoints their typed parameters and defaults.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import gradio as gr
from PIL import Image

from omnigen.errors import sentence
from omnigen.settings import GenerationSettings, random_seed, read_value, setting_fields, value_type

from .compose import mask_from_image
from .engine import GPU_QUEUE, MAX_INPUT_IMAGES, Studio, current_studio
from .jobs import DoneEvent, GenerationJob
from .i18n import translate
from .prompt_editing import image_problems
from .running import checked_job, follow_job, step_progress

_english = functools.partial(translate, lang="en")  # the API speaks English, whatever the client's language

SLOT_NAMES = tuple(f"image_{k}" for k in range(1, MAX_INPUT_IMAGES + 1))


def setting_input(spec, default: Any) -> gr.components.Component:
    """The hidden widget that gives the endpoint one setting's parameter: its type, label and default."""
    kind, label = value_type(spec), spec.name
    if spec.name == "seed":
        return gr.Number(-1, precision=0, label="seed (-1: random)")
    if kind is bool:
        return gr.Checkbox(default, label=label)
    if kind is str:
        return gr.Textbox(default, label=label)
    return gr.Number(default, precision=0 if kind is int else None, label=label)


SERVER_PATH_REFUSED = ("An input file names a path on the server, which is never read: upload the file itself "
                       "(gradio_client's handle_file does).")


def word_the_refusal_of_server_paths() -> None:
    """A request whose file input names a path on the server instead of an upload is refused by Gradio before any
    handler runs, and the caller sees no reason ({"error": null}). Gradio checks every input file in
    processing_utils._check_allowed; this keeps its check and gives its refusal of such an input a sentence."""
    from gradio import processing_utils
    from gradio.exceptions import InvalidPathError

    check = getattr(processing_utils, "_check_allowed", None)
    if check is None or getattr(check, "worded", False):
        return

    def check_allowed(path, check_in_upload_folder: bool) -> None:
        try:
            check(path, check_in_upload_folder)
        except InvalidPathError:
            if check_in_upload_folder:  # an input, not an output of the app
                raise gr.Error(SERVER_PATH_REFUSED) from None
            raise

    check_allowed.worded = True
    processing_utils._check_allowed = check_allowed


def build_api_endpoints(studio: Studio) -> None:
    word_the_refusal_of_server_paths()
    defaults = studio.defaults()
    with gr.Column(visible=False):
        inputs = [gr.Textbox(label="prompt")]
        inputs += [gr.File(label=name, file_types=["image"]) for name in SLOT_NAMES]
        inputs += [gr.File(label="mask", file_types=["image"])]
        inputs += [setting_input(spec, getattr(defaults, spec.name)) for spec in setting_fields()]
        gallery = gr.Gallery(format="png", label="images")
        settings = gr.JSON(label="settings")
        generate_trigger = gr.Button()
        condition_kind = gr.Textbox("canny", label="kind (canny, silhouette)")
        condition_image = gr.File(label="image", file_types=["image"])
        condition_out = gr.Image(format="png", label="condition")
        condition_trigger = gr.Button()
    generate_trigger.click(generate, inputs, [gallery, settings], api_name="generate",
                           concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit)
    condition_trigger.click(lambda kind, image: make_condition(studio, kind, image),
                            [condition_kind, condition_image], condition_out, api_name="condition")


def generate(prompt: str, *files_and_settings: Any):
    """Generate image(s) from a prompt with <img><|image_k|></img> placeholders and up to five images.
    Returns the images (PNG with their settings as metadata) and the list of their settings."""
    *files_and_settings, progress = files_and_settings  # Gradio passes the tracker where __signature__ says
    slots = list(files_and_settings[:MAX_INPUT_IMAGES])
    mask = files_and_settings[MAX_INPUT_IMAGES]
    given = dict(zip([spec.name for spec in setting_fields()], files_and_settings[MAX_INPUT_IMAGES + 1:]))
    problems = image_problems(prompt or "", slots)
    if problems:
        raise gr.Error(" ".join(problems))
    if not (prompt or "").strip():
        raise gr.Error("The prompt is empty.")
    job = checked_job(GenerationJob(prompt, [p for p in slots if p], request_settings(given), _read_mask(mask)),
                      _english)  # refused at once, before the job queues for the model
    for event in follow_job(job, _english, progress=step_progress(progress, _english)):
        if isinstance(event, DoneEvent):
            yield [(r.path, f"seed {r.settings['seed']}") for r in event.images], [r.settings for r in event.images]
        else:
            yield gr.skip(), gr.skip()  # a point where a cancelled job can stop


# The endpoint's documented signature: prompt, image_1..5, mask, then one parameter per setting.
generate.__signature__ = inspect.Signature(
    [inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
    + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None)
       for name in (*SLOT_NAMES, "mask")]
    + [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                         annotation=value_type(spec) | None) for spec in setting_fields()]
    + [inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())])


def request_settings(given: dict[str, Any]) -> GenerationSettings:
    """The settings of one request: the model's defaults where none is given, every value checked. A negative
    or missing seed becomes a random one, chosen here so that it comes back in the settings."""
    values = {}
    try:
        for name, value in given.items():
            if name == "seed" and (value is None or float(value) < 0):
                value = random_seed()
            if value is not None:
                values[name] = read_value(name, value)
        return current_studio().pipe.settings(current_studio().defaults(), **values)
    except ValueError as error:
        raise gr.Error(sentence(str(error))) from None


def _read_mask(path: str | None):
    if not path:
        return None
    try:
        with Image.open(path) as picture:
            picture.load()
            return mask_from_image(picture)
    except (OSError, ValueError) as error:
        raise gr.Error(f"The mask is not a readable image ({error}); send a PNG, white where the edit may "
                       "change pixels.") from None


def make_condition(studio: Studio, kind: str, image: str | None) -> str:
    if not image:
        raise gr.Error("Send the picture to turn into a condition map.")
    try:
        return studio.make_condition(kind, image)
    except ValueError as error:
        raise gr.Error(str(error)) from None
