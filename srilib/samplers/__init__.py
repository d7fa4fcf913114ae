"""Samplers: each turns prompts into step-wise traces (srilib.traces.TraceSet) and knows nothing about SRI.

- :class:`ARSampler` decodes any causal LM left to right.
- Diffusion samplers (``srilib.samplers.diffusion``) denoise a response canvas, including AR decoding of the
  same diffusion weights (the paper's sampler ablation).
- ``entropy_bound`` (``srilib.samplers.block_diffusion``) is DiffusionGemma's own ``generate()`` traced step by step;
  on DiffusionGemma, ``dlm-ar`` (``ARDiffusionSampler``) decodes with its causal encoder
  (``srilib.samplers.encoder_ar``).
- ``srilib.traces`` holds what every sampler shares: :class:`~srilib.traces.TracedLoop` and the checks of ``capture``
  and ``poolings``.

Every sampler has ``trace_batch(lm, prompts, layers)`` (a TraceSet) and ``generate(lm, prompts)`` (final texts
only: the same loop, no hidden states, no pooling, the same texts), and the settings ``capture`` (``"after"``,
the default: step t's activation from the forward pass that sees step t's commit, one extra pass in all; or
``"decision"``: from the pass that made step t's decision, no extra pass, the authors' convention; see
:mod:`srilib.traces`) and ``poolings`` (None: record every pooling the sampler offers).
"""
from .ar import ARSampler

__all__ = ["ARSampler", "make_sampler", "native_samplers"]


def make_sampler(name: str, **kw):
    """Sampler by name: 'ar' for causal LMs, a diffusion sampler name (see srilib.samplers.diffusion),
    ``entropy_bound`` for DiffusionGemma (srilib.samplers.block_diffusion), or
    ``diffuguard`` (the settings of the authors' runs: SAR + audit and repair) / ``diffuguard-sar`` (audit off) for
    :class:`srilib.samplers.diffuguard.DiffuGuardSampler`."""
    if name in ("ar", "ar-greedy"):
        return ARSampler(**kw)
    from . import block_diffusion, diffusion
    if name in block_diffusion.BLOCK_DIFFUSION_NAMES:
        return block_diffusion.make_block_diffusion_sampler(name, **kw)
    if name in diffusion.DIFFUGUARD_NAMES:
        from .diffuguard import DiffuGuardSampler
        if name == "diffuguard-sar":
            if kw.get("audit"):
                raise ValueError("'diffuguard-sar' is DiffuGuard with the audit off; use 'diffuguard' for the audit")
            kw["audit"] = False
        return DiffuGuardSampler(**kw)
    return diffusion.make_diffusion_sampler(name, **kw)


def native_samplers(kind: str, gen_length: int, steps: int) -> dict:
    """name -> sampler of a model's own decoding: AR decoding of ``gen_length`` tokens for a causal LM; for a DLM,
    low-confidence remasking and ``dlm-ar`` (the same weights decoded left to right). The organisms' checks
    (:func:`srilib.organisms.check.run`) receive this from their callers."""
    if kind == "ar":
        return {"ar": make_sampler("ar", steps=gen_length)}
    return {"low_confidence": make_sampler("low_confidence", gen_length=gen_length, steps=steps),
            "dlm-ar": make_sampler("dlm-ar", gen_length=gen_length, steps=steps)}
