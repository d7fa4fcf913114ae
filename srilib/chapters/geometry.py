"""Chapter "SRI geometry": anchors, per-group trajectories (paper Figure 12) and the LDA projection (Figure 13)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..experiment import Experiment, PromptSets
from ..geometry import GROUPS, Projection, lda_projection, outcome_groups
from ..metrics import refusal_rate
from ..signal import Anchors


@dataclass
class GeometryResult:
    """Everything the chapter shows for one run (model + sampler)."""

    run: str
    anchors: Anchors
    by_set: dict[str, np.ndarray]  # evaluation set -> sigma [N, T]
    by_group: dict[str, np.ndarray]  # outcome group -> sigma [N, T]
    projection: Projection | None
    refusal: dict  # evaluation set -> Rate (dictionary refusal rate)
    empty_share: dict | None = None  # "anchors" / "evaluation" -> share of (prompt, step) pairs with nothing
    #                                  generated yet, whose `generated` pooling fell back to the canvas mean

    def row(self) -> dict:
        """One line of the chapter's summary table."""
        a = self.anchors
        final = {g: (float(s[:, -1].mean()) if len(s) else float("nan")) for g, s in self.by_group.items()}
        return {"run": self.run, "anchors (harmless/harmful)": f"{a.n_harmless}/{a.n_harmful}",
                "anchor fallback": a.fallback or "none", "anchor separation (mean 1−cos)": float(a.separation.mean()),
                **{f"nothing generated yet ({k}, share of prompt×step)": v
                   for k, v in (self.empty_share or {}).items()},
                "RR raw harmful": str(self.refusal["raw"]), "RR harmless": str(self.refusal["harmless"]),
                **{f"final σ ({g})": (f"{final[g]:.2f} (n={len(self.by_group[g])})" if len(self.by_group[g])
                                      else "– (n=0)") for g in GROUPS},
                "LDA balanced acc.": (self.projection.cv_accuracy if self.projection else float("nan"))}


def run_geometry(exp: Experiment, spec: str, sets: PromptSets, tau: float = 0.1) -> GeometryResult:
    """Anchors from the anchor split, then SRI signals of every evaluation set, grouped by outcome."""
    run = exp.resolve(spec)
    anchors = exp.anchors(run, sets)
    by_set, labels, sig, refusal, empty = {}, [], [], {}, []
    anchor_sets = [exp.traces(run, p, f"anchors/{k}") for k, p in (("harmless", sets.anchor_harmless),
                                                                 ("harmful", sets.anchor_harmful))]  # cache hits
    for name, (prompts, harmful) in sets.evaluation().items():
        ts = exp.traces(run, prompts, name)
        empty.append(ts.empty_share * len(ts))
        s = anchors.signal(ts, tau=tau)
        by_set[name] = s
        refusal[name] = refusal_rate(ts.texts)
        labels.append(outcome_groups(ts.texts, harmful))
        sig.append(s)
    S, lab = np.concatenate(sig), np.concatenate(labels)
    by_group = {g: S[lab == g] for g in GROUPS}
    present = [g for g in GROUPS if (lab == g).sum() >= 2]
    proj = lda_projection(S[np.isin(lab, present)], lab[np.isin(lab, present)]) if len(present) >= 2 else None
    shares = {"anchors": sum(t.empty_share * len(t) for t in anchor_sets) / sum(len(t) for t in anchor_sets),
              "evaluation": sum(empty) / len(S)}
    return GeometryResult(run=run.label, anchors=anchors, by_set=by_set, by_group=by_group, projection=proj,
                          refusal=refusal, empty_share=shares)
