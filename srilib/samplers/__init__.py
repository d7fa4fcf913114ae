"""Samplers: each turns prompts into step-wise traces (srilib.traces.TraceSet) and knows nothing about SRI.

- :class:`ARSampler` decodes any causal LM left to right.
- Diffusion samplers (``srilib.samplers.diffusion``) denoise a response canvas, including AR decoding of the
  same diffusion weights (the paper's sampler ablation).

Every sampler has ``trace_batch(lm, prompts, layers)`` (a TraceSet) and ``generate(lm, prompts)`` (final texts
only: the same loop, no hidden states, no pooling, the same texts), and the settings ``capture`` (``"after"``,
the default: step t's activation from the forward pass that sees step t's commit, one extra pass in all; or
``"decision"``: from the pass that made step t's decision, no extra pass, the authors' convention; see
:mod:`srilib.traces`) and ``poolings`` (None: record every pooling the sampler offers).
"""
from .ar import ARSampler

__all__ = ["ARSampler", "make_sampler"]


def make_sampler(name: str, **kw):
    """Sampler by name: 'ar' for causal LMs, a diffusion sampler name (see srilib.samplers.diffusion), or
    ``diffuguard`` (the settings of the authors' runs: SAR + audit and repair) / ``diffuguard-sar`` (audit off) for
    :class:`srilib.samplers.diffuguard.DiffuGuardSampler`."""
    if name in ("ar", "ar-greedy"):
        return ARSampler(**kw)
    from . import diffusion
    if name in diffusion.DIFFUGUARD_NAMES:
        from .diffuguard import DiffuGuardSampler
        if name == "diffuguard-sar":
            if kw.get("audit"):
                raise ValueError("'diffuguard-sar' is DiffuGuard with the audit off; use 'diffuguard' for the audit")
            kw["audit"] = False
        return DiffuGuardSampler(**kw)
    return diffusion.make_diffusion_sampler(name, **kw)
