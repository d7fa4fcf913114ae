"""Chapter "SRI geometry": the summary table keeps one set of columns whatever the group sizes."""
import numpy as np

from srilib.chapters.geometry import GROUPS, GeometryResult
from srilib.metrics import refusal_rate
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
