"""The SRI signal (paper, Section 3.1) and the per-step anchors it is measured against.

sigma_t = sigmoid((log(d_t^harmful + eps) - log(d_t^harmless + eps)) / tau), with d_t^k = 1 - cos(phi_t, mu_t^k).
sigma near 1 means the hidden state sits closer to the harmless (compliant) anchor, near 0 closer to the
refusal anchor.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .judges import is_refusal

if TYPE_CHECKING:  # pragma: no cover
    from .traces import TraceSet

COMPLIANCE_ZONE = 0.5  # sigma above this: compliance
REFUSAL_ZONE = 0.3  # sigma below this: refusal; in between: transitional
ZONE_NAMES = ("refusal", "transitional", "compliance")  # indexed by zone(sigma)


class AnchorError(ValueError):
    """Anchors cannot be built as asked (e.g. the refusal filter leaves a class empty)."""


class AnchorStepError(AnchorError):
    """An anchor step has nothing to average (every kept generation pooled a zero vector there) or holds NaN.
    Falling back to unfiltered means would not fix it: the traces or the pooling must change."""


def _cos_distance(phi: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """1 - cos(phi_t, mu_t) along the last axis; a zero-norm phi gives cos = 0 (distance 1)."""
    num = np.einsum("...td,td->...t", phi, mu)
    den = np.linalg.norm(phi, axis=-1) * np.linalg.norm(mu, axis=-1)
    cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return 1.0 - cos


def sri_signal(phi, mu_harmless, mu_harmful, tau: float = 0.1, eps: float = 1e-8) -> np.ndarray:
    """SRI signal sigma for pooled activations ``phi`` against per-step anchors.

    Parameters
    ----------
    phi : array [T, D] or [N, T, D]
        Pooled hidden state per step (one generation, or N generations).
    mu_harmless, mu_harmful : array [T, D]
        Per-step anchor means.
    tau, eps : float
        Temperature and the log's stabiliser (paper: 0.1 and 1e-8).

    Returns
    -------
    numpy array [T] or [N, T] in (0, 1); 1 = compliant, 0 = refusal-aligned. A zero-norm phi_t (nothing pooled
    yet) has distance 1 to both anchors and so gives exactly 0.5 ("no information").
    """
    return _signal(_check_phi(phi), unit_anchors(mu_harmless, mu_harmful), tau, eps)


def unit_anchors(mu_harmless, mu_harmful) -> np.ndarray:
    """Validated anchors as unit vectors, stacked [T, D, 2] (harmless, harmful) in float64."""
    mh = np.asarray(mu_harmless, dtype=np.float64)
    mr = np.asarray(mu_harmful, dtype=np.float64)
    if mh.ndim != 2 or mh.shape != mr.shape:
        raise ValueError(f"anchors must both have shape [T, D]; got {mh.shape} and {mr.shape}")
    for name, arr in (("mu_harmless", mh), ("mu_harmful", mr)):
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise ValueError(f"{name} contains NaN or inf (first at index {bad}); check the model's dtype "
                             "(fp16 overflow) or the traces that produced it")
        if (np.linalg.norm(arr, axis=-1) == 0).any():
            raise ValueError(f"{name} has a zero-norm step; anchors must come from non-empty generations")
    u = np.stack([mh, mr], axis=-1)
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _check_phi(phi) -> np.ndarray:
    """``phi`` as a float32 or float64 array [T, D] / [N, T, D] with finite values."""
    phi = np.asarray(phi)
    if phi.dtype not in (np.float32, np.float64):
        phi = phi.astype(np.float64)
    if phi.ndim not in (2, 3):
        raise ValueError(f"phi must have shape [T, D] or [N, T, D], got {phi.shape}")
    if not np.isfinite(phi).all():
        bad = np.argwhere(~np.isfinite(phi))[0].tolist()
        raise ValueError(f"phi contains NaN or inf (first at index {bad}); check the model's dtype "
                         "(fp16 overflow) or the traces that produced it")
    return phi


def _signal(phi: np.ndarray, unit: np.ndarray, tau: float, eps: float) -> np.ndarray:
    """The formula, vectorised. ``unit``: [T, D, 2] unit anchors. The dot products run in phi's precision
    (float32 traces: float32 matmul, ~1e-6 relative error in cos; float64: exact to rounding), the rest in
    float64."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if phi.shape[-2:] != unit.shape[:2]:
        raise ValueError(
            f"phi has T={phi.shape[-2]}, D={phi.shape[-1]} but anchors have T={unit.shape[0]}, D={unit.shape[1]}: "
            "build the anchors from traces with the same number of steps and the same model/layer "
            "(steps must match one to one; re-run generate_traces with steps equal to the anchors' T)."
        )
    one = phi.ndim == 2
    p = phi[None] if one else phi  # [N, T, D]
    num = np.matmul(p.transpose(1, 0, 2), unit.astype(p.dtype, copy=False)).transpose(1, 0, 2)  # [N, T, 2]
    norm = np.sqrt(np.einsum("ntd,ntd->nt", p, p)).astype(np.float64)[..., None]
    cos = np.divide(num.astype(np.float64), norm, out=np.zeros(num.shape), where=norm > 0)
    d = 1.0 - cos  # zero-norm phi: cos 0, distance 1 to both anchors, sigma exactly 0.5
    logit = (np.log(d[..., 1] + eps) - np.log(d[..., 0] + eps)) / tau
    sig = 1.0 / (1.0 + np.exp(-logit))
    return sig[0] if one else sig


@dataclass
class Anchors:
    """Per-step anchor means for one model, layer and pooling, with how they were made.

    ``fallback`` is None when the paper's refusal filtering was applied to both classes; otherwise it names the
    class(es) built from unfiltered means, and every plot of these anchors says so.
    """

    mu_harmless: np.ndarray  # [T, D]
    mu_harmful: np.ndarray  # [T, D]
    n_harmless: int
    n_harmful: int
    layer: int = -1
    pooling: str = "generated"
    fallback: str | None = None
    source_keys: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    @property
    def T(self) -> int:
        return int(self.mu_harmless.shape[0])

    @cached_property
    def key(self) -> str:
        """Content hash: identifies these anchors (a guard refuses signals made against other anchors)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.layer, self.pooling, self.fallback, list(self.source_keys)]).encode())
        h.update(np.ascontiguousarray(self.mu_harmless, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.mu_harmful, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    @property
    def separation(self) -> np.ndarray:
        """Cosine distance between the two anchors at each step ([T])."""
        return _cos_distance(self.mu_harmless[None], self.mu_harmful)[0]

    @property
    def label(self) -> str:
        """One line for figure titles: counts and, if used, the fallback."""
        s = f"anchors: {self.n_harmless} harmless / {self.n_harmful} harmful"
        if self.fallback:
            s += f" (UNFILTERED fallback: {self.fallback})"
        return s

    def signal(self, traces: "TraceSet | np.ndarray", tau: float = 0.1, eps: float = 1e-8) -> np.ndarray:
        """SRI signal [N, T] of a TraceSet (same layer and pooling as the anchors) or of raw phi."""
        phi = traces if isinstance(traces, np.ndarray) else traces.phi(self.pooling, self.layer)
        return _signal(_check_phi(phi), self._unit, tau, eps)

    @cached_property
    def _unit(self) -> np.ndarray:
        """Validated unit anchors [T, D, 2], computed once (the guard scores many batches against them)."""
        return unit_anchors(self.mu_harmless, self.mu_harmful)

    def save(self, path) -> None:
        from .io import atomic_write_bytes
        import io
        buf = io.BytesIO()
        np.savez(buf, mu_harmless=self.mu_harmless, mu_harmful=self.mu_harmful,
                 info=np.array(json.dumps({"n_harmless": self.n_harmless, "n_harmful": self.n_harmful,
                                           "layer": self.layer, "pooling": self.pooling,
                                           "fallback": self.fallback, "source_keys": list(self.source_keys),
                                           "meta": self.meta})))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "Anchors":
        with np.load(path) as z:
            info = json.loads(str(z["info"]))
            return cls(mu_harmless=z["mu_harmless"], mu_harmful=z["mu_harmful"], n_harmless=info["n_harmless"],
                       n_harmful=info["n_harmful"], layer=info["layer"], pooling=info["pooling"],
                       fallback=info["fallback"], source_keys=tuple(info["source_keys"]), meta=info["meta"])


def build_anchors(harmless: "TraceSet", harmful: "TraceSet", *, layer: int = -1, pooling: str = "generated",
                  allow_unfiltered: bool = False, refusal_fn=is_refusal) -> Anchors:
    """Per-step anchors with the paper's filtering.

    The harmless anchor averages only harmless generations the model did NOT refuse; the harmful anchor only
    harmful generations it DID refuse (``refusal_fn`` on the final text, default the paper's dictionary).

    If a filtered class is empty, an :class:`AnchorError` is raised unless ``allow_unfiltered=True``, in which
    case that class falls back to the unfiltered mean and ``Anchors.fallback`` records it.
    """
    if len(harmless) == 0 or len(harmful) == 0:
        raise AnchorError("build_anchors needs at least one harmless and one harmful trace; got "
                          f"{len(harmless)} harmless and {len(harmful)} harmful")
    if harmless.T != harmful.T:
        raise AnchorError(f"harmless traces have T={harmless.T} steps but harmful traces have T={harmful.T}; "
                          "generate both with the same steps")
    keep_h = np.array([not refusal_fn(t) for t in harmless.texts])
    keep_r = np.array([refusal_fn(t) for t in harmful.texts])
    fallback = []
    for name, keep, total in (("harmless", keep_h, len(harmless)), ("harmful", keep_r, len(harmful))):
        if keep.sum() == 0:
            what = ("every harmless prompt was refused" if name == "harmless"
                    else "the model refused none of the harmful prompts")
            if not allow_unfiltered:
                raise AnchorError(
                    f"No {name} anchor after the paper's refusal filtering: {what} ({total} prompts). "
                    "Use a model that refuses (e.g. 'smollm2-135m-refusal' or an organism), add prompts, or opt in "
                    "to the unfiltered mean with build_anchors(..., allow_unfiltered=True); the fallback is then "
                    "recorded in Anchors.fallback and shown on every plot.")
            keep[:] = True
            fallback.append(name)
    phi_h = harmless.phi(pooling, layer)[keep_h]
    phi_r = harmful.phi(pooling, layer)[keep_r]
    mu_h, mu_r = phi_h.mean(axis=0), phi_r.mean(axis=0)
    for name, mu, n in (("harmless", mu_h, len(phi_h)), ("harmful", mu_r, len(phi_r))):
        bad = np.flatnonzero(~np.isfinite(mu).all(-1) | (np.linalg.norm(mu, axis=-1) == 0))
        if len(bad):
            raise AnchorStepError(
                f"the {name} anchor ({pooling!r} pooling, layer {layer}) is undefined at step(s) "
                f"{bad.tolist()}: none of its {n} generations has anything pooled there (or the traces hold "
                "NaN). The 'generated' pooling of traces made by this srilib version never leaves a step empty "
                "(it falls back to the canvas mean, see srilib.traces); regenerate traces made by an older "
                "version, or pass pooling='generated' or 'canvas'.")
    return Anchors(
        mu_harmless=mu_h, mu_harmful=mu_r,
        n_harmless=int(keep_h.sum()), n_harmful=int(keep_r.sum()), layer=layer, pooling=pooling,
        fallback=",".join(fallback) or None,
        source_keys=(harmless.meta.get("key", ""), harmful.meta.get("key", "")),
        meta={"model": harmless.meta.get("model"), "sampler": harmless.meta.get("sampler")},
    )


def zone(sigma: np.ndarray | float) -> np.ndarray:
    """0 = refusal (sigma < 0.3), 1 = transitional, 2 = compliance (sigma > 0.5); ``ZONE_NAMES[zone(s)]`` names it."""
    s = np.asarray(sigma)
    return np.where(s > COMPLIANCE_ZONE, 2, np.where(s < REFUSAL_ZONE, 0, 1))


__all__: Sequence[str] = ("sri_signal", "Anchors", "AnchorError", "AnchorStepError", "build_anchors", "zone",
                          "COMPLIANCE_ZONE", "REFUSAL_ZONE", "ZONE_NAMES")
