"""The organisms' shipped weights: ``srilib/organisms/weights/<name>/``, checked against the manifest's sha256 (the
manifest, ``srilib/organisms/data/manifest.json``, is read here), and the loader of the v2 organisms
(:func:`load_organism`: the shipped weights, or the retrained ones from the cache).

The book analyses the weights shipped in the repository, so that every machine analyses the same models (trained
on first use they would differ with the CPU's floating-point arithmetic). ``make organisms`` retrains them from
the committed corpus with the recorded recipe (:mod:`srilib.organisms.train`) into the cache and compares the
retrained models' preconditions with the shipped ones' (:mod:`srilib.organisms.check`); ``--install`` replaces
the shipped files and records their sha256 in ``srilib/organisms/data/manifest.json`` ("weights").
"""
from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ..models import LoadedModel, ModelSpec, dtype_name, loader
from ..traces import sha256_file

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST_FILE = Path(__file__).parent / "data" / "manifest.json"  # the corpus's and the weights' records
SHIPPED = ("organism-ar", "organism-dlm", "smollm2-135m-refusal", "smollm2-135m-refusal-v3", "smollm2-135m-dlm")
# What a model directory needs at load time (train_log.json documents it); optimiser state is never shipped.
_KEEP = ("model.safetensors", "adapter_model.safetensors", "mask_embedding.safetensors", "config.json",
         "adapter_config.json",
         "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "chat_template.jinja", "train_log.json")
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
MAX_TOTAL_MB = 50.0  # v2's three models (35 MB) + the v3 pair (<= 15 MB)


class ShippedWeightsError(RuntimeError):
    """Shipped weights missing or not the ones the manifest records."""


def load_manifest(path: Path | None = None) -> dict:
    """The manifest (``srilib/organisms/data/manifest.json``, or ``path``): the corpus, recipes and weights as
    frozen; {} when absent."""
    path = Path(path) if path is not None else MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record(name: str) -> dict | None:
    """The manifest's record of ``name``'s shipped files (None if it ships none)."""
    return (load_manifest().get("weights") or {}).get(name)


def shipped_dir(name: str, verify: bool = True) -> Path | None:
    """The directory of ``name``'s shipped weights (checked against the manifest), or None if none are shipped."""
    rec = record(name)
    if rec is None:
        return None
    d = WEIGHTS_DIR / name
    if verify:
        bad = [f for f, sha in rec["files"].items() if not (d / f).is_file() or sha256_file(d / f) != sha]
        if bad:
            raise ShippedWeightsError(
                f"the shipped weights of {name} in {d} do not match the manifest (files {bad}); restore them with "
                f"`git checkout -- {d}` (weights are stored in the repository) or retrain and reinstall them with "
                "`make organisms ORGANISMS_ARGS=--install`")
    return d


def fingerprint(name: str) -> str:
    """A short hash of the shipped files (it keys the trace cache, so new weights never reuse old traces)."""
    rec = record(name) or {}
    return hashlib.sha256(json.dumps(rec.get("files", {}), sort_keys=True).encode()).hexdigest()[:16]


def total_mb() -> float:
    return sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file()) / 2 ** 20


def install(name: str, src: Path) -> dict:
    """Copy a trained model directory into the shipped weights and record the files' sha256 in the manifest."""
    src = Path(src)
    dst = WEIGHTS_DIR / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    files = {}
    adapter = (src / "adapter_model.safetensors").is_file()
    for f in _KEEP:
        if adapter and f in _TOKENIZER:  # an adapter uses its base model's tokenizer (from the embedded GGUF)
            continue
        if (src / f).is_file():
            shutil.copy2(src / f, dst / f)
            files[f] = sha256_file(dst / f)
    if not ({"model.safetensors", "adapter_model.safetensors"} & set(files)):
        raise ShippedWeightsError(f"{src} holds no model.safetensors or adapter_model.safetensors")
    m = load_manifest()
    log = json.loads((src / "train_log.json").read_text()) if (src / "train_log.json").is_file() else {}
    m.setdefault("weights", {})[name] = {
        "files": files, "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trained_from": src.name, "code_version": log.get("code_version"), "corpus_sha256": log.get("corpus_sha256"),
        "train_seconds": log.get("train_seconds"), "threads": log.get("threads")}
    MANIFEST_FILE.write_text(json.dumps(m, indent=2) + "\n")
    if total_mb() > MAX_TOTAL_MB:
        raise ShippedWeightsError(f"shipped weights total {total_mb():.1f} MB, over the {MAX_TOTAL_MB:.0f} MB budget")
    return m["weights"][name]


def same_files(a: Path, b: Path) -> dict[str, bool]:
    """Per weight file: are the two directories' files bit-identical?"""
    out = {}
    for f in ("model.safetensors", "adapter_model.safetensors"):
        if (Path(a) / f).is_file() or (Path(b) / f).is_file():
            fa, fb = Path(a) / f, Path(b) / f
            out[f] = fa.is_file() and fb.is_file() and sha256_file(fa) == sha256_file(fb)
    return out


# --------------------------------------------------------------------------------------------------------------
# Loading an organism (srilib.models' loader "organism")
# --------------------------------------------------------------------------------------------------------------
CONFIG_CHOICES = ("full", "tiny")


def resolve_name(name: str, config: str = "full") -> str:
    """Config name for a registered organism name and a ``config`` option ("full" or "tiny")."""
    if config not in CONFIG_CHOICES:
        raise ValueError(f"unknown organism config {config!r}; use one of {CONFIG_CHOICES}")
    base = name[: -len("-tiny")] if name.endswith("-tiny") else name
    return f"{base}-tiny" if (config == "tiny" or name.endswith("-tiny")) else base


WEIGHT_SOURCES = ("shipped", "trained")


def organism_path(name: str, weights: str = "shipped"):
    """(directory, fingerprint) of v2 organism ``name``: its shipped weights, or the retrained ones in the cache (the
    v3 pair: :func:`srilib.organisms.v3.v3_path`)."""
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"weights={weights!r}; use one of {WEIGHT_SOURCES}")
    if weights == "shipped" and name in SHIPPED:
        path = shipped_dir(name)
        if path is None:
            raise ShippedWeightsError(f"no shipped weights for {name} are recorded in the manifest; train them with "
                                        "`make organisms` (or load with weights='trained')")
        return path, f"organism:{name}:shipped:{fingerprint(name)}"
    from .recipe import get_config
    from .train import ensure_trained

    path = ensure_trained(name, get_config(name))
    return path, f"organism:{path.name}"


@loader("organism")
def load_organism(spec: ModelSpec, dtype, device: str, config: str = "full", weights: str = "shipped",
                  **_) -> LoadedModel:
    """The loader of every organism: the shipped weights (checked against the manifest) or the retrained ones; an
    adapter (its directory holds ``adapter_config.json``) is merged into the embedded SmolLM2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling import DiffusionLlamaForMaskedLM

    name = resolve_name(spec.name, config)
    path, fp = organism_path(name, weights)
    if (path / "adapter_config.json").is_file():  # the adapter on the embedded SmolLM2 (its tokenizer too), merged
        from peft import PeftModel

        from ..models import dequantised_smollm2_dir

        base_dir = dequantised_smollm2_dir()[0]
        tok = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")
        model = PeftModel.from_pretrained(base, path).merge_and_unload().to(dtype=dtype, device=device)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        cls = DiffusionLlamaForMaskedLM if spec.kind == "dlm" else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=dtype).to(device)
    kind = spec.kind
    return LoadedModel(name=spec.name if name == spec.name else name, model=model, tokenizer=tok, kind=kind,
                       fingerprint=fp, dtype_name=dtype_name(dtype),
                       mask_id=tok.mask_token_id if kind == "dlm" else None,
                       family="bidirectional" if kind == "dlm" else "")
