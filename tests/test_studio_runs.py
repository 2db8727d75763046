"""The studio's run handlers without a browser, on the tiny model: a batch's pictures in the history with the settings
they ran with, a grid's failed cells shown without a file left behind, and Cancel on the Generate tab, whose own
answer never replaces the run's last status."""

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from app import batch_tab, generate_tab, grid_tab, running
from app.engine import Studio
from app.generate_tab import FIELDS, RUN_OUTPUTS, make_generate_handler, make_run_controls, page_values_from_settings
from app.history import new_browser_id
from app.i18n import EN, ZH
from app.jobs import DoneEvent, GeneratedImage, GenerationJob, StepEvent
from omnigen.settings import GenerationSettings

SLOTS = [None] * 5
HAN = "\u4e00-\u9fff"


def page_request(lang: str = "en", session: str = "page-1") -> SimpleNamespace:
    """What the handlers read of a gr.Request: the page's session and the browser's language."""
    return SimpleNamespace(session_hash=session, headers={"accept-language": "zh-CN,zh" if lang == "zh" else "en-US"})


def page_values(studio: Studio, **changes) -> dict:
    """The Generate tab's settings panel (FIELDS) at the model's defaults, 32x32 and 2 steps, its seed as shown."""
    defaults = studio.defaults()
    values = {name: getattr(defaults, name) for name in FIELDS if hasattr(defaults, name)}
    values.update(width=32, height=32, num_inference_steps=2, seed=0, randomize_seed=False, output_size=0,
                  preview_every=0)
    values.update(changes)
    return {name: values[name] for name in FIELDS}  # in the order the handlers take them


def no_progress(*args, **kwargs) -> None:
    pass


def pngs(studio: Studio) -> set[Path]:
    return set(studio.output_dir.rglob("*.png"))


# ----------------------------------------------------------------------------- the Batch tab and the history


def test_each_picture_of_a_batch_goes_into_the_history_with_its_settings(studio, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "a red circle", "name": "circle"}) + "\n"
                    + json.dumps({"prompt": "a blue square", "seed": 7, "guidance_scale": 3.5}) + "\n")
    browser, values = new_browser_id(), page_values(studio, seed=100)
    run = batch_tab.make_batch_handler(studio)
    updates = list(run(page_request(), no_progress, None, str(jobs), "", "text_to_image", browser, *values.values()))

    assert updates[-1][0] == EN["status_batch_done"].format(done=2, count=2, failed=0)
    entries = studio.history.entries(browser)  # newest first
    assert [e["prompt"] for e in entries] == ["a blue square", "a red circle"]
    gallery = updates[-2][3]  # the history gallery, after the last picture
    assert [path for path, _ in gallery] == [e["results"][0]["path"] for e in entries]
    square, circle = entries
    assert (circle["results"][0]["settings"]["seed"], square["results"][0]["settings"]["seed"]) == (100, 7)
    assert square["results"][0]["settings"]["guidance_scale"] == 3.5 and square["preset"] == "text_to_image"
    assert (square["ui"]["seed"], square["ui"]["guidance_scale"], square["ui"]["randomize_seed"]) == (7, 3.5, False)
    assert circle["ui"]["seed"] == 100 and circle["ui"]["guidance_scale"] == values["guidance_scale"]
    restored = dict(zip(FIELDS, page_values_from_settings(square["results"][0]["settings"], square["ui"])))
    assert (restored["seed"], restored["guidance_scale"], restored["num_inference_steps"]) == (7, 3.5, 2)
    for entry in entries:  # the history's own file, the same picture as the zip's copy
        made = Path(entry["results"][0]["path"])
        assert made.parent == studio.output_dir and made.is_file()
    deleted = studio.history.delete(browser, circle["id"])  # pruned with the history, as any run's
    assert len(deleted) == 1 and not Path(circle["results"][0]["path"]).exists()


def test_a_refused_batch_names_the_uploads_never_a_path_on_the_server(studio, tmp_path):
    animation = tmp_path / "walk.gif"
    Image.new("RGB", (8, 8)).save(animation)
    run = batch_tab.make_batch_handler(studio)
    for lang in ("en", "zh"):
        with pytest.raises(gr.Error) as refused:
            list(run(page_request(lang), no_progress, [str(animation)], None, "make it blue", "edit", None,
                     *page_values(studio).values()))
        shown = refused.value.message
        assert "'uploads'" in shown and str(studio.output_dir) not in shown, shown
    assert shown.startswith("'uploads' 中没有图片"), shown
    assert not (studio.output_dir / "batches").exists() or not any((studio.output_dir / "batches").iterdir())


# ----------------------------------------------------------------------------- the Grid tab's failed cells


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_failed_cell_is_shown_in_the_page_language_and_leaves_no_file(studio, lang):
    browser = new_browser_id()
    run = grid_tab.make_grid_handler(studio)
    axes = [grid_tab.AXIS_VALUE + "sampler", "euler, dpmpp_2m", "", ""]  # dpmpp_2m needs 3 steps: refused in place
    updates = list(run(page_request(lang), no_progress, *axes, "text_to_image", "a red circle", *SLOTS,
                       *page_values(studio).values(), browser))

    status, cells, grid_file, _ = updates[-1]
    made, failed = cells
    assert Path(made[0]).is_file() and made[1] == "sampler euler"
    assert isinstance(failed[0], Image.Image), "a failed cell's picture is made in memory, not stored"
    if lang == "en":
        assert len(failed[0].getcolors()) > 2  # the reason, written in it
        assert failed[1].startswith("sampler dpmpp_2m: num_inference_steps must be at least 3")
        assert status.startswith("Grid done: 1 of 2 cells made") and "1 cell(s) failed" in status
    else:
        assert failed[1].startswith("sampler dpmpp_2m：采样器 dpmpp_2m 至少需要 3 步"), failed[1]
        assert status.startswith("网格完成：已生成 1/2 个单元格")
        assert len(failed[0].getcolors()) <= 2, "no English written in a Chinese page's picture: grey, red edge"
    entries = studio.history.entries(browser)
    assert [Path(e["results"][0]["path"]) for e in entries] == [Path(made[0])]
    assert pngs(studio) == {Path(made[0]), Path(grid_file)}  # nothing else stays behind
    studio.history.delete(browser, entries[0]["id"])
    assert pngs(studio) == {Path(grid_file)}


# ----------------------------------------------------------------------------- Cancel on the Generate tab


def generate_values(studio: Studio, browser: str | None, prompt: str = "a red circle", **changes) -> list:
    return ["text_to_image", prompt, *SLOTS, None, *page_values(studio, **changes).values(), browser]


def statuses(updates: list[dict]) -> list[str]:
    return [update["status"] for update in updates if "status" in update]


def test_cancel_answers_nothing_and_the_run_says_it_was_cancelled(studio):
    request = page_request()
    start_run, request_stop = make_run_controls(studio)
    generate = make_generate_handler(studio, {name: name for name in (*RUN_OUTPUTS, "seed")})
    browser = new_browser_id()
    before = pngs(studio)

    start_run(request, "a red circle", 0, *SLOTS)
    assert request_stop(request) is None  # no status of its own: it could land after the run's last one

    start_run(request, "a red circle", 0, *SLOTS)
    stopped = lambda *args, **kwargs: request_stop(request)  # noqa: E731 - Cancel pressed at the first step
    updates = list(generate(request, stopped, *generate_values(studio, browser, num_inference_steps=1000)))
    assert statuses(updates)[-1].startswith("Cancelled after step ")
    assert pngs(studio) == before and studio.history.entries(browser) == []


def test_cancel_after_the_run_ended_leaves_its_last_status(studio):
    request = page_request("zh")
    start_run, request_stop = make_run_controls(studio)
    generate = make_generate_handler(studio, {name: name for name in (*RUN_OUTPUTS, "seed")})
    start_run(request, "a red circle", 0, *SLOTS)
    updates = list(generate(request, no_progress, *generate_values(studio, new_browser_id())))
    assert statuses(updates)[-1].startswith("完成")
    assert request_stop(request) is None  # the page keeps "done", with its seeds
    assert studio.live.stop_generation(request.session_hash) is False  # no flag left behind by the run

    start_run(request, "a red circle", 0, *SLOTS)
    request_stop(request)  # pressed while the run waited in the queue: the run itself says so
    late = list(generate(request, no_progress, *generate_values(studio, new_browser_id())))
    assert statuses(late) == [ZH["status_cancelled_before"]]


def test_a_result_that_arrives_after_cancel_is_kept(monkeypatch, studio, tmp_path):
    """Cancel that lands between a run's last step and its result: the pictures are saved by then, so the run ends
    as done rather than 'cancelled, nothing was saved'. A real worker cannot be made to stop in that gap on demand;
    this feeds follow_job the events it would see."""
    picture = tmp_path / "made.png"
    Image.new("RGB", (8, 8)).save(picture)
    stop = running.threading.Event()

    def events(job):
        yield StepEvent(2, 2)
        stop.set()  # Cancel arrives now
        yield DoneEvent([GeneratedImage(str(picture), {"seed": 1})])

    monkeypatch.setattr(running, "gpu_job_events", events)
    job = GenerationJob("a red circle", [], GenerationSettings(height=32, width=32, num_inference_steps=2))
    seen = list(running.follow_job(job, lambda key, **values: key, stop))
    assert [type(event).__name__ for event in seen] == ["StepEvent", "DoneEvent"]

    def cancelled_midway(job):
        yield StepEvent(1, 2)
        stop.set()
        yield StepEvent(2, 2)

    stop.clear()
    monkeypatch.setattr(running, "gpu_job_events", cancelled_midway)
    seen = list(running.follow_job(job, lambda key, **values: key, stop))
    assert seen[-1] == running.Cancelled(2)
