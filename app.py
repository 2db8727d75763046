"""OmniGen Studio: `python app.py [--model DIR_OR_REPO] ...` launches the Gradio studio."""

from app.main import main

if __name__ == "__main__":
    main()
