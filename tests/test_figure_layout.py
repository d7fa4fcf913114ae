"""Every figure of the book keeps its data free (issue 23): legends sit outside the axes, titles fit their panel,
heat maps carry a colour bar. Each plotting function is drawn on synthetic inputs in the notebooks' two-panel grid
(the detector figures on synthetic results, through the chapter helpers the notebook calls) and checked with
:func:`srilib.figures.layout_problems`, which the mutation test shows catches a legend on the data.
"""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from srilib.chapters.defenses import overhead_points  # noqa: E402
from srilib.chapters.detector import (DEFENSES, METHODS, DetectorResult, GuardConfig, guard_roc_panel,  # noqa: E402
                                      roc_panel)
from srilib.chapters.shift import shift_fpr  # noqa: E402
from srilib.figures import (  # noqa: E402
    anchor_separation, book_style, figure_grid, GROUP_COLORS, layout_problems, legend_below,
    plot_budget_curves, plot_cases, plot_family_rates, plot_guard_rocs, plot_irr_bars, plot_overhead,
    plot_projection, plot_rocs, plot_sampler_deltas, plot_shift, plot_trajectories, plot_transfer, sigma_axes,
    ZONE_STYLE)
from srilib.stats import Estimate, wilson  # noqa: E402

RUNS = ("smollm2-135m-refusal-v3@ar", "smollm2-135m-dlm@low_confidence")
rng = np.random.default_rng(0)


def _detector(run):
    """A DetectorResult with what the detector figures read: scores, AUROCs, anchors' fallback, the shift rows."""
    scores = {(m, 0): {"harmless": rng.random(30), "flip_attack": rng.random(30) + 0.3,
                       "roleplay": rng.random(30) + 0.2} for m in METHODS}
    shift = {"rows": [{"family": f, "sri_fpr": wilson(k, 30)} for f, k in
                      (("built-in (eval split)", 2), ("code", 5), ("medical questions", 9))]}
    return DetectorResult(run=run, kind="ar", layer_index={}, anchors={"last": SimpleNamespace(fallback=None)},
                          signals={}, texts={}, refusal={}, jailbreaks=["flip_attack", "roleplay"], detectors={},
                          scores=scores, auroc={(m, 0): SimpleNamespace(value=0.7) for m in METHODS}, auroc_raw={},
                          seeds=[0], cfg=GuardConfig(quantile=0.95), n_boot=0, shift=shift)


def _report(run):
    rows = {d: {"status": "run", "overhead incl. capture %": 10.0 * (i + 1), "asr": wilson(10 - i, 40)}
            for i, d in enumerate(DEFENSES)}
    return SimpleNamespace(run=run, row=rows.get)


def _trajectories(ax, run):
    groups = {g: rng.random((20, 32)) for g in ("harmless", "refused harmful", "jailbroken")}
    plot_trajectories(ax, groups, title=f"{run}: mean σ_t per step by outcome, interquartile band",
                      note="anchors: 4 harmless / 4 harmful (UNFILTERED fallback: harmful)")


def _projection(ax, run):
    Z = rng.normal(size=(90, 2))
    plot_projection(ax, Z, np.repeat(np.array(["harmless", "refused", "jailbroken"]), 30), ("LD 1", "LD 2"),
                    title=f"{run}: balanced accuracy 0.83 (chance 0.33), 3 classes, last step, 90 generations")


def _separation(ax, run):
    anchor_separation(ax, {r: rng.random(32) for r in RUNS})


def _irr(ax, run):
    plot_irr_bars(ax, {r: {lam: wilson(k, 40) for lam, k in ((0.5, 20), (0.3, 12), (0.1, 3))} for r in RUNS},
                  title="IRR over all harmful prompts", bands=[(0.4, 0.6, "paper DLMs")],
                  families=dict(zip(RUNS, ("AR", "DLM"))))


def _family(ax, run):
    plot_family_rates(ax, {r: wilson(k, 40) for r, k in zip(RUNS, (20, 8))}, dict(zip(RUNS, ("AR", "DLM"))),
                      bands=[(0.48, 0.62, "paper AR", "AR"), (0.09, 0.21, "paper DLM", "DLM")], title="ASR per run")


def _budget(ax, run):
    curves = {r: ([0, 1, 5, 25, 100], [wilson(k, 20) for k in (2, 4, 6, 9, 12)]) for r in RUNS}
    plot_budget_curves(ax, curves, title="ASR against the Random Search budget")


def _rocs(ax, run):
    plot_rocs(ax, **roc_panel(_detector(run)))


def _guard_rocs(ax, run):
    plot_guard_rocs(ax, **guard_roc_panel({r: _detector(r) for r in RUNS}))


def _overhead(ax, run):
    plot_overhead(ax, **overhead_points({r: _report(r) for r in RUNS}))


def _shift(ax, run):
    plot_shift(ax, **shift_fpr({r: _detector(r) for r in RUNS}))


def _transfer(ax, run):
    plot_transfer(ax, {"auroc": rng.random((2, 2)), "labels": list(RUNS)})


def _cases(ax, run):
    plot_cases([ax], [rng.random(32)], [(rng.random(32) > 0.5).astype(float)],
               [f"{run}: generation 1, harmful at step 5, recovered"])


PANELS = {"trajectories": _trajectories, "projection": _projection, "anchor separation": _separation,
          "IRR bars": _irr, "family rates": _family, "budget curves": _budget, "ROC per detector": _rocs,
          "SRI Guard ROC": _guard_rocs, "overhead": _overhead, "harmless shift": _shift, "transfer": _transfer,
          "worked cases": _cases}


@pytest.fixture(autouse=True)
def _close():
    book_style()
    yield
    plt.close("all")


@pytest.mark.parametrize("name", PANELS)
def test_figures_keep_legends_off_the_data_and_titles_apart(name):
    fig, axes = figure_grid(2, panel_height=3.3)  # the notebooks' grid: two panels a row
    for ax, run in zip(axes, RUNS):
        PANELS[name](ax, run)
    fig.tight_layout()
    assert layout_problems(fig) == []
    for ax in axes:
        if ax.get_legend() is not None:  # below the axes: its top under the axes' bottom
            r = fig.canvas.get_renderer()
            assert ax.get_legend().get_window_extent(r).y1 <= ax.get_window_extent(r).y0


def test_sampler_delta_figure_keeps_its_legend_off_the_data():
    est = lambda v: Estimate(v, v - 0.1, v + 0.1, "paired bootstrap", signed=True)  # noqa: E731
    rows = [{"set": s, "paper": p, "d_rr": est(0.1), "d_asr": est(-0.1), "d_irr": est(0.2)}
            for s, p in (("raw", None), ("flip_attack", "Flip Attack"))]
    fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.6), sharey=True)
    plot_sampler_deltas(axes, rows, title="remasking vs AR sampling", paper={"LLaDA": {"Flip Attack": (10, -8)}})
    fig.tight_layout()
    assert layout_problems(fig) == []


def test_layout_check_catches_a_legend_on_the_data_and_overlapping_titles():
    fig, axes = figure_grid(2)
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="a line")
        ax.set_title("a title long enough to run into the next panel of the grid when not wrapped at all")
    axes[0].legend(loc="lower right")
    found = layout_problems(fig)
    assert any("legend of panel 0 lies over the data of panel 0" in f for f in found), found
    assert any(f.startswith("titles of panels") for f in found), found
    axes[0].get_legend().remove()
    legend_below(axes[0])
    for ax in axes:
        ax.set_title("short")
    fig.tight_layout()
    assert layout_problems(fig) == []


def test_transfer_heat_map_has_a_colour_bar_and_zones_do_not_share_the_groups_hues():
    fig, ax = plt.subplots()
    before = len(fig.axes)
    plot_transfer(ax, {"auroc": rng.random((2, 2)), "labels": list(RUNS)})
    assert len(fig.axes) == before + 1  # the colour bar's axes
    ax2 = plt.figure().add_subplot()
    sigma_axes(ax2, 8)
    zone_colours = {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax2.patches}
    assert zone_colours == {c for c, _ in ZONE_STYLE.values()}
    for c in zone_colours:  # greys: no hue to confuse with the harmful (red) or refused (green) band
        r, g, b = matplotlib.colors.to_rgb(c)
        assert max(r, g, b) - min(r, g, b) < 0.02
    assert all(max(matplotlib.colors.to_rgb(c)) - min(matplotlib.colors.to_rgb(c)) > 0.3
               for c in GROUP_COLORS.values())
