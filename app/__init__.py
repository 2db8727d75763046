"""OmniGen Studio, the Gradio app: `python app.py` (see app/main.py).

Modules: main (flags, loading, launch), ui (the page), api (named endpoints), engine (jobs -> omnigen),
prompt_editing (placing and renumbering image tags), compose (keeping pixels outside an edit mask),
history (the session history). Importing this package imports neither gradio nor torch.
"""
