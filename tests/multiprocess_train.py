"""`python -m omnigen train ...` that also records which examples this process trained on, for
tests/test_multiprocess_training.py (run alone or under `accelerate launch`): OUT/seen-rank<k>.json lists
each micro-batch this process built, {"micro_batch": g, "examples": [dataset indices]}, in order."""

import json
import os
import sys
from pathlib import Path

from omnigen.training import data_order


def main(argv: list[str]) -> int:
    out = Path(argv[argv.index("--out") + 1])
    seen: list[dict] = []
    build = data_order.FiniteMicroBatches.__getitem__

    def recording(self, g: int):
        seen.append({"micro_batch": g, "examples": self.order.indices(g)})
        return build(self, g)

    data_order.FiniteMicroBatches.__getitem__ = recording
    from omnigen.cli import main as omnigen_main

    code = omnigen_main(argv)
    (out / f"seen-rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
