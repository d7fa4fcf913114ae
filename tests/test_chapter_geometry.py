"""Chapter "SRI geometry": the summary table keeps one set of columns whatever the group sizes."""
import numpy as np
import pytest

from srilib.chapters.geometry import GROUPS, GeometryResult
from srilib.chapters import verdicts
from srilib.signal import refusal_rate
from srilib.signal import Anchors


def _result(sizes):
    a = Anchors(mu_harmless=np.ones((2, 2)), mu_harmful=np.eye(2), n_harmless=3, n_harmful=2)
    groups = {g: np.full((n, 2), 0.25) for g, n in zip(GROUPS, sizes)}
    return GeometryResult("m@ar", a, {}, groups, None, {"raw": refusal_rate(["I'm sorry, no."]),
                                                         "harmless": refusal_rate(["Sure."])})


def test_row_columns_do_not_depend_on_group_sizes():
    r1, r2 = _result([0, 2, 3]).row(), _result([4, 1, 0]).row()
    assert list(r1) == list(r2)
    assert r1[f"final σ ({GROUPS[0]})"] == "– (n=0)" and r1[f"final σ ({GROUPS[1]})"] == "0.25 (n=2)"
    assert r1["RR raw harmful"].endswith("(1/1)")


# ---- issue 12: geometry verdicts come from a tested conclusions(), read from intervals
def _geo(final_harmless, final_refusal, run="m@ar", fallback=None, proj=None, ids=None):
    from srilib.chapters.geometry import GeometryResult
    a = Anchors(mu_harmless=np.ones((2, 2)), mu_harmful=np.eye(2), n_harmless=3, n_harmful=2, fallback=fallback)
    groups = {"harmless": np.c_[np.ones(len(final_harmless)), final_harmless],
              "harmful": np.zeros((0, 2)), "refusal": np.c_[np.ones(len(final_refusal)), final_refusal]}
    return GeometryResult(run, a, {}, groups, proj, {"raw": refusal_rate(["I'm sorry."]),
                                                       "harmless": refusal_rate(["Sure."])}, group_ids=ids)


def test_geometry_conclusions_read_intervals_not_points(monkeypatch):
    import srilib.chapters as C
    from srilib.chapters.geometry import conclusions

    monkeypatch.setattr(C, "weak_models", lambda runs: {})
    rng = np.random.default_rng(0)
    # clearly separated: refused end near 0.1, harmless near 0.9
    sep = _geo(0.9 + 0.01 * rng.standard_normal(20), 0.1 + 0.01 * rng.standard_normal(20))
    (v,) = conclusions([sep], n_boot=300)
    assert (v.kind, v.side, v.runs, v.weak) == ("geometry.ordering", 1, ("m@ar",), ())
    assert str(v.data["gap"]) in v and v.data["separability"] is None  # the estimate it prints; no projection
    # point means in the paper's order (0.55 vs 0.45) but heavily overlapping: no ordering claimed
    over = _geo(np.r_[0.9, 0.2, 0.8, 0.3, 0.55], np.r_[0.85, 0.1, 0.75, 0.2, 0.35])
    (v,) = conclusions([over], n_boot=300)
    assert v.data["gap"].value > 0 and v.side == 0
    (v,) = conclusions([_geo([0.9, 0.8], [0.1, 0.2], fallback="harmful")])
    assert (v.kind, v.side, v.runs) == ("geometry.fallback", None, ("m@ar",))


def test_geometry_final_gap_resamples_requests():
    # the refusal group holds one request under three attacks (identical outcomes): as wide as one item
    ids = {"harmless": np.array(["h0", "h1", "h2", "h3"], dtype=object),
           "refusal": np.array(["r0", "r0", "r0", "r1", "r1", "r1"], dtype=object)}
    g = _geo(np.r_[0.9, 0.8, 0.7, 0.6], np.r_[0.1, 0.1, 0.1, 0.5, 0.5, 0.5], ids=ids)
    wide = g.final_gap(n_boot=400)
    g.group_ids = None  # every generation its own cluster: narrower
    narrow = g.final_gap(n_boot=400)
    assert wide.value == pytest.approx(narrow.value) and (wide.hi - wide.lo) > (narrow.hi - narrow.lo)


def test_separability_interval_and_verdict(monkeypatch):
    import srilib.chapters as C
    import srilib.chapters as G
    from srilib.chapters.geometry import conclusions
    from srilib.geometry import lda_projection

    for mod in (C, G):  # the caveat's words and the verdict's weak runs
        monkeypatch.setattr(mod, "weak_models", lambda runs: {"m": ["x"]})
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(3, 1, (30, 4))]
    lab = np.array(["harmless"] * 30 + ["refusal"] * 30)
    p = lda_projection(X, lab)
    acc = p.accuracy_interval(n_boot=300)
    assert acc.lo > p.chance
    g = _geo(np.full(30, 0.9) + 0.01 * rng.standard_normal(30), np.full(30, 0.1), proj=p)
    (v,) = verdicts(conclusions([g], n_boot=300))  # after the weak-models bullet
    assert v.data["separability"] == 1 and v.weak == ("m@ar",) and C.weak_caveat(["m@ar"]) in v
    assert str(v.data["accuracy"]) in v
    noise = lda_projection(rng.normal(0, 1, (40, 4)), np.array(["harmless", "refusal"] * 20))
    g2 = _geo(np.full(40, 0.9), np.full(40, 0.1), proj=noise)
    assert verdicts(conclusions([g2], n_boot=300))[0].data["separability"] == 0


def test_anchor_notes_name_the_fallback_the_small_anchor_and_empty_steps():
    from srilib.chapters.geometry import anchor_notes
    from srilib.chapters.paper_numbers import PAPER_ANCHOR_SEPARATION

    small, fallback = _geo([0.9], [0.1], run="s@ar"), _geo([0.9], [0.1], run="f@ar", fallback="harmful")
    fallback.empty_share = {"evaluation": 0.25}
    notes = anchor_notes({"s": small, "f": fallback})
    assert notes[0].startswith("- **s@ar**: filtered anchors from 3 complied-harmless and 2 refused-harmful")
    assert f"{PAPER_ANCHOR_SEPARATION[0]:g}-{PAPER_ANCHOR_SEPARATION[1]:g}" in notes[0]
    assert notes[1].startswith("  **Caution:**")  # the anchor of 2 generations
    assert notes[2].startswith("- **f@ar**: the refusal filter left the *harmful* anchor empty")
    assert notes[3].startswith("  At 25% of its evaluation")
    big = _geo([0.9], [0.1])
    big.anchors.n_harmless = big.anchors.n_harmful = 12
    assert len(anchor_notes([big])) == 1  # no caution, nothing empty
