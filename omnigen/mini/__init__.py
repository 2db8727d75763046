"""The miniature world of the embedded default model: procedural X2I-mini tasks and their judge.

Modules: `world` (scenes, figures and their renderers), `tasks` (task generators),
`judge` (programmatic checks of generated images), `eval` (the evaluation table),
`examples` (the pictures the studio presets use).
"""
