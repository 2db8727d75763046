"""The X2I-mini world: flat-colour scenes of simple shapes and a stick figure, and their renderers.

A scene is a light background with one to three objects; a figure is a stick person in one of 54
poses, optionally wearing a coloured or patterned shirt. Every picture the task generators and the
judge need is rendered from these small specs, with antialiasing off, so the same spec always gives
the same pixels.

- `model`: what the world holds, with no pixels: palette, layout grid, scenes, poses, garments, geometry.
- `shapes`: the masks of the world's shapes, which both renderers draw with.
- `render`: the pixels: masks, renderers, degradations and `render_picture` for a picture spec.
- `photo`: pictures from outside the grid, as a user uploads them (any size, place and canvas; noise, JPEG).

All are re-exported here, so `from omnigen.mini.world import Scene, render_scene` reads as one world.
"""

from .model import (
    ARM_POSES,
    BACKGROUND_COLORS,
    BODY_RGB,
    DEFAULT_SIZE,
    DEPTH_LEVELS,
    DEPTHS,
    FIGURE_BACKGROUNDS,
    GRID,
    HALF_EXTENT,
    HEAD_RADIUS,
    LEAN_DEGREES,
    LEANS,
    LEG_POSES,
    LIMB_WIDTH,
    LIMBS,
    MARKER_COLOR,
    MARKER_RGB,
    MIN_GAP,
    MIRRORED_REGION,
    OBJECT_COLORS,
    PATTERN_RGB,
    PATTERNS,
    REGION_CENTERS,
    REGION_DEPTH,
    REGIONS,
    RGB,
    SHAPES,
    SIZES,
    SKELETON_WIDTH,
    Figure,
    Garment,
    Pose,
    Scene,
    SceneObject,
    color_rgb,
    figure_joints,
    half_extent,
    mirror_scene,
    object_box,
    region_center,
    scale_from_grid,
    scene_layout_problem,
    segmentation_target,
)
from .render import (
    CANNY_THRESHOLDS,
    LIMB_COLORS,
    PICTURE_KINDS,
    add_noise,
    blur,
    canny_edges,
    figure_body_mask,
    garment_mask,
    object_mask,
    object_masks,
    pattern_fill,
    render_depth,
    render_edges,
    render_figure,
    render_garment,
    render_picture,
    render_scene,
    render_scene_array,
    render_segmentation,
    render_skeleton,
    to_grayscale,
    torso_mask,
    torso_polygon,
)
from .photo import Photo, PhotoObject, photo_object_mask, render_photo, render_photo_as_output
from .shapes import disc_mask, shape_mask
