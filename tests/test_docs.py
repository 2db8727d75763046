"""Every Python block of README.md and docs/ runs, as a reader would run it, in a fresh folder that holds the
checkout's assets/.

A block that cannot run here is marked on the line before its fence, `<!-- doc-test: skip REASON -->` (an account
on the Hub, a GPU), and the test says why. Each block is a fresh Python process that loads a model: slow.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!--\s*doc-test:\s*(skip)\b\s*(.*?)\s*-->")


def python_blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """(line of the fence, code, mark, reason) of each ```python block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            mark = MARK.search(lines[i - 1]) if i else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((i + 1, "\n".join(lines[i + 1:end]), mark.group(1) if mark else "",
                           mark.group(2) if mark else ""))
            i = end
        i += 1
    return blocks


def cases():
    for path in DOCS:
        for line, code, mark, reason in python_blocks(path):
            marks = [pytest.mark.skip(reason=reason or "marked in the doc")] if mark == "skip" else []
            yield pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}", marks=marks)


def test_the_docs_have_python_blocks_and_each_mark_has_a_reason():
    blocks = [block for path in DOCS for block in python_blocks(path)]
    assert len(blocks) >= 3
    assert all(reason for _, _, mark, reason in blocks if mark == "skip")


@pytest.mark.slow
@pytest.mark.parametrize("code", cases())
def test_the_block_runs(code, tmp_path):
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("OMNIGEN_MODEL", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
