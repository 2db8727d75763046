"""`python -m omnigen train ...` that also records what this process trained, for tests/test_multiprocess_training.py
and tests/test_fsdp_training.py (run alone or under `accelerate launch`):
OUT/seen-rank<k>.json lists each micro-batch this process built, {"micro_batch": g, "examples": [dataset
indices]}, in order; under FSDP, OUT/shards-rank<k>.json lists every parameter of the sharded model as this
process holds it, {"name", "local": [shape], "full": [shape], "sharded": bool, "sum": its local sum}."""

import json
import os
import sys
from pathlib import Path

from omnigen.training import data_order, trainer


def shard_report(model) -> list[dict]:
    from torch.distributed.tensor import DTensor

    report = []
    for name, param in model.named_parameters():
        local = param.to_local() if isinstance(param, DTensor) else param
        report.append({"name": name, "local": list(local.shape), "full": list(param.shape),
                       "sharded": isinstance(param, DTensor), "sum": float(local.detach().double().sum())})
    return report


def main(argv: list[str]) -> int:
    out = Path(argv[argv.index("--out") + 1])
    rank = os.environ.get("RANK", "0")
    seen: list[dict] = []
    build = data_order.FiniteMicroBatches.__getitem__
    shard = trainer.shard_model

    def recording(self, g: int):
        seen.append({"micro_batch": g, "examples": self.order.indices(g)})
        return build(self, g)

    def sharding_recorded(model, plan, device):
        model = shard(model, plan, device)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"shards-rank{rank}.json").write_text(json.dumps(shard_report(model)), encoding="utf-8")
        return model

    data_order.FiniteMicroBatches.__getitem__ = recording
    trainer.shard_model = sharding_recorded
    from omnigen.cli import main as omnigen_main

    code = omnigen_main(argv)
    (out / f"seen-rank{rank}.json").write_text(json.dumps(seen), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
