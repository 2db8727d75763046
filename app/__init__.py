"""OmniGen Studio, the Gradio app: `python app.py` (see app/main.py).

Modules: main (flags, loading, launch), ui (the page shell), generate_tab, grid_tab and batch_tab (the tabs),
composition_ui (saved compositions), api (named endpoints), running (the one job loop of the page and the API),
jobs (worker threads, job and event types), engine (jobs -> omnigen), prompt_editing (placing and renumbering
image tags), compose (keeping pixels outside an edit mask), history (the session history). Importing this package
imports neither gradio nor torch.
"""
