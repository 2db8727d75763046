"""The studio's English texts, by stable key: the page's own (UI) and those made from the library's data.

Preset titles, descriptions, image labels and variants, setting labels and help, and example titles are
read from omnigen (presets, settings, assets/examples/examples.json), so the English is the library's own;
app/i18n_zh.py holds the same keys in Chinese. `{name}` fields are filled by app.i18n.text.
"""

from __future__ import annotations

import re

from omnigen.png import SETTINGS_KEY
from omnigen.presets import PRESETS, load_examples
from omnigen.settings import setting_fields

UI: dict[str, str] = {
    # the page
    "tab_generate": "Generate",
    "model_header": "**Model** `{model}` · **device** `{device}` · **dtype** `{dtype}` · native size {size}x{size}",
    "preset_label": "Task preset",
    "variant_label": "Variant",
    "examples_label": "Examples (click one to load it)",
    "no_examples": "(no examples yet)",
    "prompt_label": "Prompt",
    "prompt_info": "Write text; put image k where it belongs with <img><|image_k|></img> (the 'insert' button under "
                   "an image does it at the cursor).",
    "image_word": "image",
    "image_k": "image {k}",
    "image_k_labelled": "image {k}: {label}",
    "insert": "insert",
    "fewshot_pairs": "Example pairs (input -> output)",
    "fewshot_build": "Build the few-shot prompt",
    "condition_button": "Make a condition map from my picture in image 1",
    "condition_canny": "Make an edge map from my picture in image 1",
    "condition_silhouette": "Make a flat depth map (foreground silhouettes) from my picture in image 1",
    "mask_accordion": "Edit mask (optional): paint where the edit may change the picture",
    "mask_load": "Paint a mask on image 1",
    "mask_label": "Mask",
    "mask_none": "No mask: the whole picture may change.",
    "mask_none_painted": "No mask painted: the whole picture may change.",
    "mask_share": "Mask: {share}% of image 1 may change; everywhere else the result keeps image 1's own pixels.",
    "generate": "Generate",
    "cancel": "Cancel",
    "settings": "Settings",
    "advanced": "Advanced",
    "seed": "Seed",
    "random_seed": "Random seed",
    "output_size": "Output size",
    "output_size_given": "width x height above",
    "size_of_image": "size of image",
    "preview_every": "Live preview every N steps (0: off)",
    "offload": "Offload to CPU (whole studio)",
    "offload_none": "none",
    "offload_model": "model",
    "offload_sequential": "sequential",
    "status_ready": "Ready.",
    "live_preview": "Live preview",
    "results": "Results",
    "before_after": "Before / after (image 1 -> result)",
    "send_to": "Send to",
    "use_as_input": "Use as input",
    "reuse": "Reuse prompt, images, settings",
    "download_png": "Download PNG",
    "settings_json": "Settings of the selected image (also in its PNG)",
    "copy_python": "Copy as Python",
    "history": "History (this browser, newest first)",
    "history_note_limit": "<small>Kept in the studio's output folder for this browser only; the newest {limit} "
                          "runs are kept.</small>",
    "history_note_all": "<small>Kept in the studio's output folder for this browser only; every run is "
                        "kept.</small>",
    "history_delete": "Delete the selected run",
    # the preset's description
    "preset_needs_image": "**image {k}**: {label}",
    "preset_no_input": "no input image",
    "preset_info": "{description}  \nNeeds {needs}.  \nRecommended: {tips}.",
    "preset_tip": "{setting} = {value}",
    "list_separator": ", ",
    "tip_separator": "; ",
    # the prompt preview
    "prompt_match": "Placeholders and images match.",
    "prompt_empty": "(empty prompt)",
    "prompt_missing_chip": "image {k}?",
    "prompt_missing_title": "no picture in slot {k}",
    # status lines
    "status_cancelled_before": "Cancelled before it started.",
    "status_starting": "Starting (seed {seed})...",
    "status_cancelled_after": "Cancelled after step {step}; nothing was saved.",
    "progress_step": "step {step}/{total}",
    "status_step": "Step {step} of {total}",
    "status_done": "Done: {count} image(s), seed {seeds}.{masked}",
    "status_masked": " Pixels outside the mask are the original's.",
    # messages (gr.Error, gr.Warning, gr.Info)
    "error_prompt_empty": "Write a prompt first (or pick a preset or an example).",
    "error_output_size": "Output size is set to the size of image {k}, but there is no image {k}: upload it or set "
                         "Output size to 'width x height above'.",
    "error_no_examples": "This preset has no examples yet (assets/examples/examples.json).",
    "error_example_missing": "The example's pictures are missing: {files}.",
    "error_no_condition": "This preset takes no condition map.",
    "error_condition_image": "Upload your picture as image 1 first; it is replaced by the map.",
    "error_image_1": "Image 1: {message}",
    "error_mask_image": "Upload the picture to edit as image 1 first.",
    "error_mask_other": "The mask was painted on another picture than image 1: click 'Paint a mask on image 1' "
                        "again and repaint.",
    "error_select_first": "Select a result first (click it in Results or in the history).",
    "error_select_delete": "Select a picture of the run to delete (in Results or in the history).",
    "warning_inputs_gone": "Some input pictures of that run are no longer on the server; upload them again.",
    "info_deleted": "Deleted the run of {time} and its {count} picture(s).",
    "info_that_time": "that time",
    "error_drop_png": "Drop a PNG made by OmniGen Studio first.",
    "info_restored": "Prompt and settings restored.",
    "info_restored_keep_prompt": "Prompt and settings restored (the picture's prompt was not usable: yours is kept).",
    # settings from a picture
    "picture_accordion": "Settings from a picture",
    "picture_intro": "Drop or paste a PNG made by OmniGen Studio (studio, CLI or Python): its prompt and settings "
                     f"travel inside it (the `{SETTINGS_KEY}` text chunk).",
    "picture_drop": "PNG with settings",
    "picture_restore": "Restore prompt and settings",
    "picture_json": "Settings stored in the picture",
    "picture_none": "**No settings to restore**: {reason}.",
    "picture_unreadable": "**No settings to restore**: the file could not be read.",
    "picture_found_prompt": "**Settings found**: the prompt and {count} settings can be restored.",
    "picture_found_no_prompt": "**Settings found**: {count} settings can be restored (no usable prompt).",
    "picture_input_one": "It was made from **1 input picture** ({slots}): the settings do not hold pictures, so put "
                         "the same one in that slot yourself.",
    "picture_inputs": "It was made from **{count} input pictures** ({slots}): the settings do not hold pictures, so "
                      "put the same ones in those slots yourself.",
    "picture_no_inputs": "It was made from the prompt alone (no input pictures).",
    "picture_adapter_at": "{name} at {scale}",
    "picture_adapters": "Adapters it used: {used}.",
    "picture_adapters_missing": "Not loaded now: {missing}; load them under Adapters for the same picture.",
    "picture_ignored": "**Ignored** (not valid here):",
    # adapters
    "adapters": "Adapters (LoRA)",
    "adapter_name": "Name (optional)",
    "adapter_name_placeholder": "from the file or folder",
    "strength": "Strength",
    "strength_of": "Strength of {name}",
    "adapter_upload_tab": "Upload",
    "adapter_files": "A .zip of the adapter folder, or adapter_model.safetensors + adapter_config.json together",
    "adapter_load_upload": "Load the uploaded adapter",
    "adapter_hub_tab": "Hugging Face Hub",
    "adapter_hub_id": "Hub id",
    "adapter_hub_placeholder": "owner/name (or owner/name/folder)",
    "adapter_load_hub": "Load from the Hub",
    "adapter_server_tab": "Server folder",
    "adapter_server_path": "Adapter folder on the server",
    "adapter_load_path": "Load from the server",
    "adapter_unload": "Unload",
    "adapter_unload_all": "Unload all (base model)",
    "adapters_none": "No adapter loaded: the base model draws.",
    "adapters_loaded": "Loaded (for every page of this studio): {listed}. Each image lists them under `loras` in its "
                       "settings.",
    "adapter_at": "`{name}` at {scale}",
    # the Train tab
    "tab_train": "Train (LoRA)",
    "train_intro": "Teach the model a new subject, style or task with a **LoRA adapter**: a few pictures, a few "
                   "minutes.\n**1.** Build the dataset (or load the example). **2.** Pick settings. **3.** Start, "
                   "watch the loss and the\nvalidation samples; Stop keeps the adapter trained so far, Resume "
                   "continues it. **4.** Use it in the Generate tab.\n\n*While a training runs it has the model to "
                   "itself: a Generate pressed meanwhile waits until it has ended\n(or is refused with a message when "
                   "the server runs several jobs at once).*",
    "train_dataset": "### 1. Dataset",
    "train_example": "Load example (new shape: rectangle)",
    "train_add_accordion": "Add a row: instruction, input picture(s), target",
    "train_instruction": "Instruction",
    "train_instruction_placeholder": "a red rectangle at the top left on a white background",
    "train_instruction_info": "Input picture k goes where you write <img><|image_k|></img>; none for text-to-image.",
    "train_inputs": "Input picture(s), in order",
    "train_target": "Target picture",
    "train_add_row": "Add row",
    "train_upload_accordion": "Or upload a dataset: .zip, .jsonl + its images, or images + same-named .txt",
    "train_upload": "Dataset files",
    "train_load_upload": "Add the uploaded dataset",
    "train_rows": "Training rows (target pictures)",
    "train_remove_row": "Remove selected row",
    "train_clear_rows": "Clear all rows",
    "train_settings": "### 2. Settings",
    "train_name": "Adapter name",
    "train_rank": "Rank",
    "train_alpha": "Alpha (0: the rank)",
    "train_lr": "Learning rate",
    "train_steps": "Steps",
    "train_batch": "Batch size",
    "train_resolution": "Resolution (longest side)",
    "train_targets": "Target modules",
    "train_targets_attention": "attention (qkv, o)",
    "train_targets_mlp": "attention + MLP",
    "train_validation_accordion": "Validation and regularisation",
    "train_validation_prompts": "Validation prompts (one per line, sampled with fixed seeds)",
    "train_sample_every": "Sample every N steps (0: at the end)",
    "train_sample_guidance": "Sample guidance",
    "train_dropout": "Condition dropout (keeps guidance working; 0 for tiny datasets)",
    "train_max_grad_norm": "Max gradient norm (0: no clipping)",
    "train_checkpointing": "Gradient checkpointing (less memory, about a third slower)",
    "train_starting": "Starting `{name}` at step {step}: preparing {count} example(s)...",
    "train_resuming": "Resuming `{name}` at step {step}: preparing {count} example(s)...",
    "train_status_progress": "Training `{name}`: step {step} of {total} ({percent}%){loss} · {elapsed} so far{eta}{stopping}",
    "train_loss_part": " · loss {loss}",
    "train_eta_part": " · about {eta} left",
    "train_stopping_part": " · stopping after this step...",
    "train_done": "Done: {step} steps",
    "train_stopped_at": "Stopped at step {step} of {total}",
    "train_adapter_ready": " The adapter (step {step}) is ready: **Use in Generate tab** below.",
    "train_no_adapter": " No adapter was saved.",
    "train_finished_line": "{how}{loss} · {elapsed}.{kept}",
    "train_samples_at": "Validation samples at step {step}",
    "duration_min_s": "{minutes} min {seconds} s",
    "duration_s": "{seconds} s",
    "train_start": "Start",
    "train_stop": "Stop",
    "train_resume": "Resume",
    "train_progress": "### 3. Progress",
    "train_not_training": "Not training.",
    "train_loss": "Training loss",
    "train_samples": "Validation samples",
    "train_use_title": "### 4. Use the adapter",
    "train_adapter_folder": "Adapter folder",
    "train_use": "Use in Generate tab",
    "train_unload": "Unload adapters (base model)",
    "train_base_model": "The Generate tab uses the base model (no adapter loaded).",
    "error_train_row": "This row cannot train: {problems}.",
    "error_train_remove": "Click a row's thumbnail first, then Remove.",
    "info_train_added": "Added {count} row(s) from the upload.",
    "train_dataset_problems": "Dataset problems",
    # the Grid tab
    "tab_grid": "Grid",
    "grid_intro": "A comparison grid of the Generate tab's prompt, pictures and settings: one picture per value of the "
                  "axis across, and per value of the axis down if you choose one. Values: a list (0, 1, 2; prompts "
                  "and file names separated by |) or, for numbers, a range START..END:COUNT (1.5..3.5:3). Every "
                  "cell is an ordinary result, kept in the history.",
    "grid_x_axis": "Across (x)",
    "grid_y_axis": "Down (y)",
    "grid_values": "Values",
    "grid_no_axis": "(none)",
    "grid_run": "Run grid",
    "grid_cancel": "Cancel grid",
    "grid_cells": "Cells",
    "grid_image": "Grid image",
    "grid_ready": "Choose the axes and their values, then run the grid.",
    "status_grid_cell": "Cell {cell} of {count} ({label}): step {step} of {total}",
    "status_grid_done": "Grid done: {done} of {count} cells made; each is in the history.{failed}",
    "status_grid_failed": " {failed} cell(s) failed: the reason is under each one.",
    "status_grid_cancelled": "Grid cancelled after {done} of {count} cells; the finished ones are in the history.",
    "progress_grid_cell": "cell {cell}/{count}",
    "grid_cell_failed": "{label}: {reason}",
    "grid_cell_not_run": "not run",
    "error_grid_adapters": "The adapter(s) {names} are not loaded; load them in the Generate tab's Adapters "
                           "panel first.",
    # compositions
    "composition_accordion": "Composition: save or load this tab",
    "composition_save": "Save composition",
    "composition_download": "Download composition",
    "composition_load": "Load a composition (.zip)",
    "info_composition_loaded": "Composition loaded: its prompt, {count} picture(s), settings and preset.",
    "warning_adapter_missing": "The composition uses the adapter {name} at {strength}, which is not loaded: load it "
                               "under that name to get the same pictures.",
    "error_composition_not_saved": "The composition could not be written to the output folder: check its free "
                                   "space and permissions (the server log has the details).",
    "history_to_composition": "Send to composition",
    # the Batch tab
    "tab_batch": "Batch",
    "batch_intro": "Many pictures at once with the Generate tab's settings: upload pictures and write one "
                   "instruction, or upload a jobs file (one JSON object a line: \"prompt\", \"images\" by file "
                   "name, any setting) with the pictures it names. The results (a PNG with its settings each, and "
                   "results.jsonl) come as one zip; each picture also goes into the history.",
    "batch_pictures": "Pictures",
    "batch_jobs_file": "Jobs file (.jsonl, optional)",
    "batch_instruction": "Instruction for every picture",
    "batch_instruction_placeholder": "make the background white",
    "batch_run": "Run batch",
    "batch_cancel": "Cancel batch",
    "batch_download": "Download results (.zip)",
    "batch_ready": "Upload the pictures (and a jobs file, or an instruction), then run.",
    "status_batch_job": "Job {job} of {count}: step {step} of {total}",
    "status_batch_done": "Batch done: {done} of {count} job(s) made, {failed} failed; each picture is in the "
                         "history.",
    "status_batch_cancelled": "Batch cancelled after {done} of {count} job(s); the finished ones are in the "
                              "history and in the zip.",
    "error_batch_nothing": "Upload pictures with an instruction, or a jobs file.",
}


def slug(text: str) -> str:
    """A key fragment from a name or title: lower case, words joined by underscores."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def preset_texts() -> dict[str, str]:
    """Each preset's title, description, image labels and variant labels."""
    texts: dict[str, str] = {}
    for name, preset in PRESETS.items():
        texts[f"preset_{name}_title"] = preset.title
        texts[f"preset_{name}_description"] = preset.description
        for k, label in enumerate(preset.image_labels, start=1):
            texts[f"preset_{name}_image_{k}"] = label
        for label, _ in preset.variants:
            texts[f"preset_{name}_variant_{slug(label)}"] = label
    # the few-shot preset's labels for any number of pairs
    texts["fewshot_example_input"] = "example {i} input"
    texts["fewshot_example_output"] = "example {i} output"
    texts["fewshot_query"] = "the query input"
    return texts


def setting_texts() -> dict[str, str]:
    """Each generation setting's label and help, and the labels of its choices."""
    texts: dict[str, str] = {}
    for spec in setting_fields():
        texts[f"setting_{spec.name}_label"] = spec.metadata["label"]
        texts[f"setting_{spec.name}_help"] = spec.metadata["help"]
        if spec.metadata["choices"] and spec.name != "sampler":  # solver names are names, in every language
            for choice in spec.metadata["choices"]:
                texts[f"setting_{spec.name}_choice_{choice}"] = choice
    return texts


def example_texts() -> dict[str, str]:
    """The example titles of assets/examples/examples.json, keyed by preset and title."""
    return {f"example_{name}_{slug(example.title)}": example.title
            for name, examples in load_examples().items() for example in examples if example.title}


EN: dict[str, str] = {**UI, **preset_texts(), **setting_texts(), **example_texts()}
