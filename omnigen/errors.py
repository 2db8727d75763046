"""One place that turns a failure into the sentence a user reads: what went wrong and what to change.

The CLI prints it, the studio shows it; neither shows a stack trace for a mistake a user can make.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("omnigen")

# How each allocator says it: CUDA ("CUDA out of memory"), MPS, and torch's CPU allocator.
class ModelFolderError(ValueError):
    """A model folder or weights file that cannot be loaded: missing files, wrong keys or shapes."""


_OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "defaultcpuallocator: not enough memory")


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, (getattr(torch, "OutOfMemoryError", MemoryError), MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(words in str(error).lower() for words in _OUT_OF_MEMORY_WORDS)


def out_of_memory_message(settings: Any = None, num_input_images: int = 0, offload: str | None = None) -> str:
    """Which settings to lower, with their values now; `settings` is a GenerationSettings (or None)."""
    if settings is None:
        return "Out of memory. Lower the output size or the number of images, or turn on offload."
    hints = [f"the output size (now {settings.width}x{settings.height})"]
    if num_input_images:
        hints.append(f"the max input image size (now {settings.max_input_image_size})")
    if settings.num_images_per_prompt > 1:
        hints.append(f"the number of images (now {settings.num_images_per_prompt})")
    if settings.cfg_mode == "batched":
        hints.append("guidance mode: 'separate' (one guidance branch at a time)")
    if not offload:
        hints.append("offload: 'model' (or 'sequential', slowest)")
    return "Out of memory. Lower " + "; or ".join(hints) + "."


def sentence(text: str) -> str:
    """A message as a sentence: capitalised, unless it opens with a name to be typed as is (a setting's, or a file's:
    "jobs.jsonl holds no jobs")."""
    first = text.split(" ", 1)[0].rstrip(".,:;")
    typed = "_" in first or "." in first or not first[:1].isalpha()
    return text if typed else text[:1].upper() + text[1:]


def user_message(error: BaseException, settings: Any = None, num_input_images: int = 0,
                 offload: str | None = None, log_unexpected: bool = True) -> str:
    """A sentence for the user: what went wrong and which setting to change. Never a stack trace."""
    from .sampler import GenerationCancelled, NonFiniteLatents

    if isinstance(error, GenerationCancelled):
        return f"Cancelled: {error}. Nothing was saved."
    if is_out_of_memory(error):
        return out_of_memory_message(settings, num_input_images, offload)
    if isinstance(error, NonFiniteLatents):
        return str(error)
    if isinstance(error, (ValueError, FileNotFoundError)):
        return sentence(str(error))
    if not log_unexpected:
        return f"The model failed ({type(error).__name__}: {error}). OMNIGEN_DEBUG=1 shows where."
    log.error("generation failed", exc_info=error)
    return f"The model failed ({type(error).__name__}). The server log has the details; try other settings."
