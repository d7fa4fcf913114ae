"""Samplers: each turns prompts into step-wise traces (srilib.traces.TraceSet) and knows nothing about SRI.

- :class:`ARSampler` decodes any causal LM left to right.
- Diffusion samplers (``srilib.samplers.diffusion``) denoise a response canvas, including AR decoding of the
  same diffusion weights (the paper's sampler ablation).
"""
from .ar import ARSampler

__all__ = ["ARSampler", "make_sampler"]


def make_sampler(name: str, **kw):
    """Sampler by name: 'ar' for causal LMs, or a diffusion sampler name (see srilib.samplers.diffusion)."""
    if name in ("ar", "ar-greedy"):
        return ARSampler(**kw)
    from . import diffusion  # noqa: WPS433 (optional until the diffusion module exists)
    return diffusion.make_diffusion_sampler(name, **kw)
