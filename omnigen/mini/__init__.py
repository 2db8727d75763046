"""The miniature world of the embedded default model: procedural X2I-mini tasks and their judge.

Modules: `world` (scenes, figures and their renderers), `tasks` (task generators),
`judge` (programmatic checks of generated images), `eval` (the evaluation table),
`examples` (the pictures the studio presets use). `world`, `tasks` and `judge` are packages
split by concern; each re-exports its public names, so `from omnigen.mini.tasks import generate` works.
"""
