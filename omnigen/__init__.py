"""OmniGen: one diffusion transformer for text-to-image, editing, conditioned generation and more."""

import logging
import os

__version__ = "0.1.0"

# torchao, which transformers, diffusers and peft import whenever it is installed, logs on import about CUDA
# kernels a CPU build lacks and about torch deprecations: none of it is the user's to act on. OMNIGEN_DEBUG=1
# shows it.
NOISY_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")
if not os.environ.get("OMNIGEN_DEBUG"):
    for _name in NOISY_IMPORT_LOGGERS:
        logging.getLogger(_name).setLevel(logging.ERROR)

__all__ = ["OmniGen", "OmniGenConfig", "OmniGenPipeline"]


def __getattr__(name: str):
    # Lazy so that `import omnigen` stays cheap (the studio starts faster, the CLI prints help at once).
    if name in ("OmniGen", "OmniGenConfig"):
        from . import model
        return getattr(model, name)
    if name == "OmniGenPipeline":
        from .pipeline import OmniGenPipeline
        return OmniGenPipeline
    raise AttributeError(f"module 'omnigen' has no attribute {name!r}")
