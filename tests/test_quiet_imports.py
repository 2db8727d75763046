"""torchao's import-time log lines stay out of the terminal, unless OMNIGEN_DEBUG=1 asks for them."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the command line and the studio import: transformers' and diffusers' quantizers import torchao when it is
# installed.
CODE = "import omnigen.pipeline, transformers.quantizers.auto, diffusers.quantizers.torchao.torchao_quantizer"


def stderr_of(debug: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMNIGEN_DEBUG"}
    if debug:
        env["OMNIGEN_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120).stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_torchao_import_lines_show_only_with_omnigen_debug():
    assert stderr_of(debug=False).strip() == ""
    shown = stderr_of(debug=True)
    assert "torchao" in shown or "_pytree" in shown
