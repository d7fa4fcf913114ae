"""srilib: step-wise refusal dynamics (the SRI signal) for autoregressive and diffusion language models.

Companion to "Step-Wise Refusal Dynamics in Autoregressive and Diffusion Language Models" (arXiv 2602.02600).
Data flows one way: prompts -> attacks -> sampler(model) -> TraceStore -> analyses -> figures -> notebooks -> book.
"""
from .judges import REFUSAL_PHRASES, is_refusal, text_signal, text_signals
from .signal import AnchorError, Anchors, build_anchors, sri_signal, zone
from .traces import TraceSet, TraceStore, generate_traces

__version__ = "0.1.0"


def load_model(name: str, **kw):
    """Load a model by name (see :mod:`srilib.models`)."""
    from .models import load_model as _load
    return _load(name, **kw)


__all__ = ["REFUSAL_PHRASES", "is_refusal", "text_signal", "text_signals", "sri_signal", "Anchors",
           "AnchorError", "build_anchors", "zone", "TraceSet", "TraceStore", "generate_traces", "load_model"]
