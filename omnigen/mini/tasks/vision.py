"""The task families of conditions and extractions: generation that follows a skeleton, depth map or edge
map (pose, depth, edges), the same maps extracted from a picture (pose_extract, depth_extract,
edges_extract), referring segmentation (segment) and restoration (denoise, deblur, colourise).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..world import FIGURE_BACKGROUNDS, MARKER_COLOR, Figure, segmentation_target
from .specs import (
    IMG1,
    Sample,
    TaskWeights,
    build_sample,
    figure_picture,
    pick,
    random_garment,
    random_pose,
    random_scene,
    scene_picture,
    skeleton_picture,
)
from .wording import garment_phrase, objects_phrase, refer, with_article

RESTORE_TASKS = ("denoise", "deblur", "colourise")


def make_pose(rng: random.Random, split: str, size: int) -> Sample:
    garment = random_garment(rng) if rng.random() < 0.8 else None
    figure = Figure(random_pose(rng), garment, rng.choice(FIGURE_BACKGROUNDS), size)
    wearing, bg = garment_phrase(garment, rng), figure.background
    instruction = rng.choice(
        (
            f"{IMG1} a person wearing {wearing} in this pose on a {bg} background",
            f"generate a person in the pose of {IMG1}, wearing {wearing}, {bg} background",
            f"following the skeleton in {IMG1}, draw a person in {wearing} on a {bg} background",
            f"a person with {wearing} standing like the skeleton in {IMG1}, on a {bg} background",
        )
    )
    inputs = [skeleton_picture(figure.pose, size)]
    return build_sample("pose", "pose", instruction, inputs, figure_picture(figure), split)


def make_pose_extract(rng: random.Random, split: str, size: int) -> Sample:
    pose = random_pose(rng)
    garment = random_garment(rng) if rng.random() < 0.7 else None
    figure = Figure(pose, garment, rng.choice(FIGURE_BACKGROUNDS), size)
    instruction = rng.choice(
        (
            f"{IMG1} detect the human pose",
            f"extract the skeleton of the person in {IMG1}",
            f"draw the pose of {IMG1} as a skeleton map",
            f"{IMG1} estimate the pose of the person",
            f"{IMG1} draw the skeleton of this person",
            f"find the joints of the person in {IMG1} and draw the skeleton",
        )
    )
    target = skeleton_picture(figure.pose, size)
    return build_sample("pose_extract", "pose_extract", instruction, [figure_picture(figure)], target, split)


def _conditioned_scene(
    family: str, map_kind: str, map_names: Sequence[str], rng: random.Random, split: str, size: int
) -> Sample:
    # Shapes are distinct so the map tells which named object goes where.
    scene = random_scene(rng, size, distinct_shapes=True)
    objs, bg = objects_phrase(scene.objects, rng, with_size=False, with_region=False), scene.background
    name = rng.choice(map_names)
    instruction = rng.choice(
        (
            f"following the {name} {IMG1}, generate {objs} on a {bg} background",
            f"{IMG1} is {with_article(name)}. draw {objs} on a {bg} background",
            f"generate an image from the {name} in {IMG1}: {objs} on a {bg} background",
            f"{objs} on a {bg} background, following {IMG1}",
        )
    )
    return build_sample(family, family, instruction, [scene_picture(scene, map_kind)], scene_picture(scene), split)


def make_depth(rng: random.Random, split: str, size: int) -> Sample:
    return _conditioned_scene("depth", "depth", ("depth map", "depth image"), rng, split, size)


def make_edges(rng: random.Random, split: str, size: int) -> Sample:
    return _conditioned_scene("edges", "edges", ("edge map", "canny edge map", "line drawing"), rng, split, size)


def make_depth_extract(rng: random.Random, split: str, size: int) -> Sample:
    scene = random_scene(rng, size)
    instruction = rng.choice(
        (
            f"{IMG1} estimate the depth map",
            f"generate the depth map of {IMG1}",
            f"predict the depth of {IMG1}",
            f"{IMG1} show how far each object is as a depth map",
            f"{IMG1} depth estimation",
            f"draw a depth map of {IMG1}, near objects bright",
        )
    )
    target = scene_picture(scene, "depth")
    return build_sample("depth_extract", "depth_extract", instruction, [scene_picture(scene)], target, split)


def make_edges_extract(rng: random.Random, split: str, size: int) -> Sample:
    scene = random_scene(rng, size)
    instruction = rng.choice(
        (
            f"{IMG1} detect the edges",
            f"extract the canny edge map of {IMG1}",
            f"draw the edges of {IMG1}",
            f"{IMG1} turn this picture into an edge map",
            f"{IMG1} edge detection",
            f"find the outlines in {IMG1} and draw them white on black",
        )
    )
    target = scene_picture(scene, "edges")
    return build_sample("edges_extract", "edges_extract", instruction, [scene_picture(scene)], target, split)


def make_segment(rng: random.Random, split: str, size: int) -> Sample:
    scene = random_scene(rng, size)
    index = rng.randrange(len(scene.objects))
    ref = refer(scene, index, rng)
    instruction = rng.choice(
        (
            f"find {ref} in {IMG1} and mark it in {MARKER_COLOR}",
            f"{IMG1} segment {ref}",
            f"highlight {ref} in {IMG1}",
            f"{IMG1} colour {ref} {MARKER_COLOR} to show where it is",
            f"where is {ref} in {IMG1}? paint it {MARKER_COLOR}",
        )
    )
    target = segmentation_target(scene, index)
    inputs = [scene_picture(scene)]
    return build_sample("segment", "segment", instruction, inputs, scene_picture(target), split, referred=index)


def make_restore(rng: random.Random, split: str, size: int, task_weights: TaskWeights = None) -> Sample:
    task = pick(rng, RESTORE_TASKS, task_weights)
    if task == "denoise":
        scene = random_scene(rng, size)
        degraded = scene_picture(scene, "noisy", sigma=round(rng.uniform(30.0, 50.0), 1), seed=rng.randrange(2**31))
        wording = (
            f"{IMG1} remove the noise",
            f"denoise {IMG1}",
            f"clean up the noisy picture {IMG1}",
            f"{IMG1} make this noisy image clean",
        )
    elif task == "deblur":
        scene = random_scene(rng, size)
        degraded = scene_picture(scene, "blurred", sigma=round(rng.uniform(2.0, 3.0), 2))
        wording = (
            f"{IMG1} deblur this image",
            f"sharpen the blurry picture {IMG1}",
            f"{IMG1} remove the blur",
            f"make {IMG1} sharp",
        )
    else:
        # White only: the grey levels of the light backgrounds are too close to tell them apart.
        scene = random_scene(rng, size, backgrounds=("white",))
        degraded = scene_picture(scene, "grey")
        wording = (
            f"colourise {IMG1}",
            f"colorize {IMG1}",
            f"{IMG1} add colour to this black and white image",
            f"restore the colours of {IMG1}",
        )
    return build_sample("restore", task, rng.choice(wording), [degraded], scene_picture(scene), split)
