"""Issue 25: following one run from the profile to its figure opens few srilib modules (tests/walk.py)."""
from __future__ import annotations

import pytest
from walk import walk

# the modules a reader opens for one diffusion run (smoke profile, cold cache): the profile and its checks, the
# chapter, the evaluation, the paper's bands, the figure; the experiment, models, the DLM adapter and the tiny
# models; the sampler; prompts, attacks; traces and their store; the signal; judges, metrics, intervals.
ALLOWED = {"profiles.py", "chapters/chapter.py", "chapters/adaptive.py", "chapters/sampling.py",
           "chapters/paper_numbers.py", "figures/__init__.py", "figures/sampling.py", "experiment.py", "models.py",
           "dlm.py", "tiny.py", "organisms/tokenizer.py", "samplers/__init__.py", "samplers/diffusion.py",
           "prompts.py", "attacks.py", "traces.py", "io.py", "signal.py", "judges.py", "metrics.py", "stats.py"}


@pytest.mark.slow  # imports every srilib module and generates a tiny run: about 12 s
def test_one_run_from_the_profile_to_its_figure_opens_only_these_modules(tmp_path, monkeypatch):
    monkeypatch.setenv("SRILIB_CACHE", str(tmp_path))  # cold: the run's traces are generated on the way
    modules = walk("smoke", "tiny-dlm@dlm-ar")
    assert "samplers/diffusion.py" in modules and "figures/sampling.py" in modules  # the walk went the whole way
    assert set(modules) <= ALLOWED, sorted(set(modules) - ALLOWED)
