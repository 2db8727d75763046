"""The miniature world of the embedded default model: procedural X2I-mini tasks and their judge.

Modules: `world` (scenes, figures and their renderers), `tasks` (task generators),
`judge` (programmatic checks of generated images), `eval` (the evaluation table),
`examples` (the pictures the studio presets use). `world`, `tasks` and `judge` are packages
split by concern; each re-exports its public names, so `from omnigen.mini.tasks import generate` works.
"""

try:  # every part of the miniature world draws with OpenCV, which the library alone does not install
    import cv2  # noqa: F401
except ImportError as error:
    raise ImportError("omnigen.mini draws its miniature world with OpenCV, which the library alone does not "
                      "install: pip install opencv-python-headless (from a checkout: pip install -e \".[train]\")") from error
