"""OmniGen: one diffusion transformer for text-to-image, editing, conditioned generation and more."""

__version__ = "0.1.0"

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
