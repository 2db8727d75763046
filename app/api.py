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

import random
from typing import Any

import gradio as gr
from PIL import Image

from .compose import mask_from_image
from .engine import (GPU_QUEUE, MAX_INPUT_IMAGES, FailedEvent, GenerationJob, StepEvent, Studio,
                     current_studio, gpu_job_events)
from .prompt_editing import image_problems


def build_api_endpoints(studio: Studio) -> None:
    d = studio.defaults()
    with gr.Column(visible=False):
        inputs = [gr.Textbox(label="prompt")]
        inputs += [gr.File(label=f"image_{k}", file_types=["image"]) for k in range(1, MAX_INPUT_IMAGES + 1)]
        inputs += [
            gr.File(label="mask", file_types=["image"]),
            gr.Number(d["width"], precision=0, label="width"),
            gr.Number(d["height"], precision=0, label="height"),
            gr.Number(d["num_inference_steps"], precision=0, label="num_inference_steps"),
            gr.Number(d["guidance_scale"], label="guidance_scale"),
            gr.Number(d["img_guidance_scale"], label="img_guidance_scale"),
            gr.Textbox(d["negative_prompt"], label="negative_prompt"),
            gr.Number(-1, precision=0, label="seed (-1: random)"),
            gr.Number(1, precision=0, label="num_images_per_prompt"),
            gr.Number(d["max_input_image_size"], precision=0, label="max_input_image_size"),
            gr.Number(0, precision=0, label="use_input_image_size_as_output (0: width/height, k: image k)"),
            gr.Textbox("batched", label="cfg_mode"),
            gr.Checkbox(True, label="use_kv_cache"),
            gr.Textbox(d["offload"] or "none", label="offload (none, model, sequential)"),
            gr.Number(1.0, label="time_shift"),
        ]
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


def generate(prompt: str, image_1: str | None = None, image_2: str | None = None, image_3: str | None = None,
             image_4: str | None = None, image_5: str | None = None, mask: str | None = None,
             width: int | None = None, height: int | None = None, num_inference_steps: int | None = None,
             guidance_scale: float | None = None, img_guidance_scale: float | None = None,
             negative_prompt: str | None = None, seed: int | None = None, num_images_per_prompt: int | None = None,
             max_input_image_size: int | None = None, use_input_image_size_as_output: int | None = None,
             cfg_mode: str | None = None, use_kv_cache: bool | None = None, offload: str | None = None,
             time_shift: float | None = None, progress=gr.Progress()):
    """Generate image(s) from a prompt with <img><|image_k|></img> placeholders and up to five images.
    Returns the images (PNG with their settings as metadata) and the list of their settings."""
    slots = [image_1, image_2, image_3, image_4, image_5]
    problems = image_problems(prompt or "", slots)
    if problems:
        raise gr.Error(" ".join(problems))
    if not (prompt or "").strip():
        raise gr.Error("The prompt is empty.")
    given = dict(width=width, height=height, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                 img_guidance_scale=img_guidance_scale, negative_prompt=negative_prompt, seed=seed,
                 num_images_per_prompt=num_images_per_prompt, max_input_image_size=max_input_image_size,
                 use_input_image_size_as_output=use_input_image_size_as_output, cfg_mode=cfg_mode,
                 use_kv_cache=use_kv_cache, offload=offload, time_shift=time_shift)
    settings = pipeline_settings({key: value for key, value in given.items() if value is not None})
    job = GenerationJob(prompt, [p for p in slots if p], settings, _read_mask(mask), 0, "api")
    for event in gpu_job_events(job):
        if isinstance(event, StepEvent):
            progress((event.step, event.total), desc=f"step {event.step}/{event.total}")
            yield gr.skip(), gr.skip()  # a point where a cancelled job can stop
        elif isinstance(event, FailedEvent):
            raise gr.Error(event.message)
        else:
            yield [(r.path, f"seed {r.settings['seed']}") for r in event.images], [r.settings for r in event.images]


def pipeline_settings(given: dict[str, Any]) -> dict[str, Any]:
    """OmniGenPipeline keyword arguments from the endpoint's values, the model's defaults where none is given.
    A negative or missing seed becomes a random one, chosen here so that it comes back in the settings."""
    s = {**current_studio().defaults(), "seed": -1, **given}
    seed = int(s["seed"])
    return dict(height=_whole(s["height"], "height"), width=_whole(s["width"], "width"),
                num_inference_steps=_whole(s["num_inference_steps"], "num_inference_steps"),
                guidance_scale=float(s["guidance_scale"]), img_guidance_scale=float(s["img_guidance_scale"]),
                negative_prompt=s["negative_prompt"] or "",
                seed=seed if seed >= 0 else random.SystemRandom().randrange(2**31),
                num_images_per_prompt=_whole(s["num_images_per_prompt"], "num_images_per_prompt"),
                max_input_image_size=_whole(s["max_input_image_size"], "max_input_image_size"),
                use_input_image_size_as_output=int(s["use_input_image_size_as_output"] or 0) or False,
                cfg_mode=s["cfg_mode"], use_kv_cache=bool(s["use_kv_cache"]),
                offload=None if s["offload"] in (None, "", "none") else s["offload"], time_shift=float(s["time_shift"]))


def _whole(value: Any, name: str) -> int:
    if value is None or float(value) != int(value):
        raise gr.Error(f"{name} must be a whole number, got {value!r}")
    return int(value)


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
