"""Train the model organisms on the frozen safety corpus (CPU, seeded, cached).

Three recipes share one corpus (:mod:`srilib.organisms.corpus`):

* ``organism-ar``: a Llama causal LM trained from scratch, cross-entropy on the response tokens and the first
  end-of-turn token.
* ``organism-dlm``: the same Llama with bidirectional attention and Dream's one-position logit shift
  (:mod:`srilib.organisms.modeling`), initialised from organism-ar's snapshot at step ``init_step`` (as Dream-v0
  starts from an AR model) and trained from there with the LLaDA-style masked-diffusion SFT loss: per example
  t ~ U(eps, 1), every canvas token (the response cut or padded with end-of-turn tokens to ``canvas`` positions)
  is masked with probability t, the prompt never is, and the loss is the cross-entropy on masked canvas tokens
  weighted by 1/t, averaged over all canvas positions.
* ``smollm2-135m-refusal``: the embedded SmolLM2-135M-Instruct with a low-rank adapter (LoRA, :mod:`peft`) on the
  attention and MLP projections of its top layers, trained on a seeded subset of the corpus, loss on the response
  tokens; only the adapter is saved (and shipped).

The two organisms have the same size, tokenizer, corpus and compute: they see the *same* batches (the same token
tensors, left-padded prompt + a ``canvas``-token response, in the same order) for the same number of optimiser
steps, so forward/backward cost is equal. The first ``init_step`` steps are shared (the AR objective); the
remaining steps differ only in the objective and the attention mask. A trained model lives in
``$SRILIB_CACHE/models/<name>-<key>/`` where the key hashes the corpus sha, the config, the code version
(:func:`code_version`) and, for organism-dlm, the key of the AR run it starts from.

The parts: configurations (:mod:`srilib.organisms.recipe`), data and losses (:mod:`srilib.organisms.batching`), model
and optimiser loop (:mod:`srilib.organisms.loop`), build-once cache directories (:mod:`srilib.organisms.artifacts`);
this module holds the training entry points, the cache keys and :func:`code_version` (the key hashes the trainers
and the trainers read keys, so they share a module: no import circle).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..traces import behaviour_hash
from .artifacts import build_once
from .batching import Data, ar_loss, batches, collate, dlm_loss, encode_rows, subset_rows
from .corpus import CORPUS_FILE, load_corpus
from .loop import LORA_TARGETS, THREADS, build_model, lora_config, lr_at, train_loop
from .recipe import SHARED_FIELDS, OrganismConfig, get_config
from ..traces import sha256_file
from .tokenizer import CHATML, SPECIAL_TOKENS, SYSTEM_PROMPT, chat_prompt, corpus_tokenizer, train_tokenizer


@lru_cache(maxsize=1)
def code_version() -> str:
    """The recipe's identity: what the code that decides the weights computes (:func:`srilib.traces.behaviour_hash`
    of the model (modeling.py), the configs, tokenizer, batching, losses, loop and this module's trainers, and of
    the constants they read). The corpus sha covers corpus.py and lexicon.py; the cache keys here, the build-once
    directories (artifacts.py) and the loaders in weights.py and check.py are not part of it, and neither is any
    docstring or comment, so editing those (or moving the recipe's functions to another file) never retrains or
    unfreezes anything."""
    code = (Path(__file__).parent / "modeling.py", OrganismConfig, train_tokenizer, corpus_tokenizer, chat_prompt,
            encode_rows, batches, collate, lr_at, build_model, ar_loss, dlm_loss, subset_rows, train_loop, Data,
            ensure_snapshot, train_organism, lora_config, train_smollm2_refusal)
    return behaviour_hash(*code, extra=(SYSTEM_PROMPT, SPECIAL_TOKENS, CHATML, SHARED_FIELDS, LORA_TARGETS))


def cache_key(name: str, cfg: OrganismConfig, base: str = "") -> str:
    """Key of a trained organism: corpus sha + config + code version (+ base-model fingerprint)."""
    payload = {"name": name, "corpus": sha256_file(CORPUS_FILE), "config": cfg.as_dict(), "code": code_version(),
               "base": base}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def model_dir(name: str, cfg: OrganismConfig, cache: Path | None = None, base: str = "") -> Path:
    """Cache directory of a trained organism, named by :func:`cache_key`."""
    from ..traces import default_cache_dir

    return (cache or default_cache_dir()) / "models" / f"{name}-{cache_key(name, cfg, base)}"


def snapshot_dir(name: str, cfg: OrganismConfig, cache: Path | None = None) -> Path:
    """Cache directory of the AR run ``name`` after ``cfg.snapshot_step`` steps (weights + optimiser state)."""
    d = model_dir(name, cfg, cache)
    return d.parent / "snapshots" / f"{d.name}-step{cfg.snapshot_step}"


def ensure_snapshot(name: str, cfg: OrganismConfig, cache: Path | None = None) -> Path:
    """Train (once, under a lock) the first ``snapshot_step`` steps of an AR organism and save them."""
    import torch
    from safetensors.torch import save_model as save_weights

    if cfg.kind != "ar" or cfg.snapshot_step <= 0:
        raise ValueError(f"{name} has no snapshot (kind {cfg.kind!r}, snapshot_step {cfg.snapshot_step})")
    out = snapshot_dir(name, cfg, cache)

    def build(tmp: Path) -> None:
        torch.set_num_threads(THREADS)
        t0 = time.time()
        data = Data(cfg)
        model = build_model(cfg, data.tok)
        curve, opt = train_loop(model, list(model.parameters()), cfg, lambda k: data.loss(model, cfg, k),
                                 f"train {name} (steps 0-{cfg.snapshot_step})", 0, cfg.snapshot_step)
        save_weights(model, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "log.json").write_text(json.dumps({"loss_curve": curve, "seconds": round(time.time() - t0, 1),
                                                  "tokens_processed": data.tokens}))

    return build_once(out, build)


def train_organism(name: str, cfg: OrganismConfig, out: Path, cache: Path | None = None) -> dict:
    """Train an "ar" or "dlm" organism and save model and tokenizer to ``out``.

    Both continue from the AR snapshot (an AR organism with ``snapshot_step``, or a DLM's ``init_from``): the AR
    with its optimiser state, the DLM with a fresh optimiser re-warmed over ``rewarmup`` steps.
    """
    import torch
    from safetensors.torch import load_model as load_weights

    torch.set_num_threads(THREADS)
    t0 = time.time()
    data = Data(cfg)
    model = build_model(cfg, data.tok)
    start, base, opt_state, prior = 0, "", None, {"loss_curve": [], "seconds": 0.0, "tokens_processed": 0}
    if cfg.init_from:
        bcfg = get_config(cfg.init_from)
        diff = [f for f in SHARED_FIELDS if getattr(bcfg, f) != getattr(cfg, f)]
        if diff or bcfg.snapshot_step != cfg.init_step or cfg.init_step <= 0:
            raise ValueError(f"{name} starts from {cfg.init_from} at step {cfg.init_step}, but the two configs differ "
                             f"in {diff or ['snapshot_step']}; give them the same data, size and schedule")
        if bcfg.lm_loss_steps > cfg.init_step:
            raise ValueError(f"{cfg.init_from} models the prompt for {bcfg.lm_loss_steps} steps, past the shared "
                             f"snapshot at {cfg.init_step}: the two organisms' own phases would differ in more than "
                             "the objective")
        sdir = ensure_snapshot(cfg.init_from, bcfg, cache)
        start, base = cfg.init_step, model_dir(cfg.init_from, bcfg, cache).name
    elif cfg.snapshot_step:
        sdir = ensure_snapshot(name, cfg, cache)
        start = cfg.snapshot_step
        opt_state = torch.load(sdir / "optimizer.pt")
        prior = json.loads((sdir / "log.json").read_text())
    if start:
        load_weights(model, str(sdir / "model.safetensors"))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    t1 = time.time()
    curve, _ = train_loop(model, list(model.parameters()), cfg, lambda k: data.loss(model, cfg, k, gen),
                           f"train {name} (steps {start}-{cfg.steps})", start, opt_state=opt_state,
                           rewarm=bool(cfg.init_from))
    seconds = time.time() - t1 + prior["seconds"]
    tokens = data.tokens + prior["tokens_processed"]
    log = {"name": name, "config": cfg.as_dict(), "corpus_sha256": sha256_file(CORPUS_FILE),
           "code_version": code_version(), "rows": data.rows, "rows_dropped_long_prompt": data.dropped,
           "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(seconds, 1),
           "total_seconds": round(time.time() - t0 + prior["seconds"], 1), "steps_run": cfg.steps - start,
           "initialised_from": base, "tokens_processed": tokens,
           "tokens_per_second": round(tokens / max(seconds, 1e-9)), "threads": torch.get_num_threads(),
           "loadavg_end": os.getloadavg()[0], "loss_curve": prior["loss_curve"] + curve,
           "epochs": round(cfg.steps * cfg.batch_size / len(data.prompts), 2)}
    model.save_pretrained(out)
    data.tok.save_pretrained(out)
    return log


def train_smollm2_refusal(name: str, cfg: OrganismConfig, out: Path, cache: Path | None = None) -> dict:
    """Train a LoRA adapter on SmolLM2-135M-Instruct (float32) on a corpus subset; save the adapter only."""
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model

    from ..models import load_model

    torch.set_num_threads(THREADS)
    t0 = time.time()
    lm = load_model("smollm2-135m", dtype="float32", device="cpu")
    tok = lm.tokenizer
    torch.manual_seed(cfg.seed)
    model = get_peft_model(lm.model, lora_config(cfg, lm.model.config.num_hidden_layers))
    rows = subset_rows(load_corpus(), cfg.max_rows, cfg.seed, cfg.harmful_share)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    prompts, canvas, lens, dropped = encode_rows(tok, rows, cfg.canvas, cfg.max_prompt, eos)
    plan = batches(np.array([len(p) for p in prompts]), cfg.batch_size, cfg.steps, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    canvas_t, lens_t = torch.from_numpy(canvas), torch.from_numpy(lens)
    base = model.get_base_model()
    tokens = [0]

    def step_loss(step: int):
        idx = plan[step]
        ids, att, P = collate(prompts, idx, lm.pad_id)
        Lmax = int(lens_t[idx].max())  # no need to run the end-of-turn fill
        cv = canvas_t[idx][:, :Lmax]
        tokens[0] += ids.numel() + cv.numel()
        x = torch.cat([ids, cv], 1)
        a = torch.cat([att, torch.ones_like(cv)], 1)
        pos = (a.cumsum(-1) - 1).clamp(min=0)
        h = base.model(input_ids=x[:, :-1], attention_mask=a[:, :-1], position_ids=pos[:, :-1]).last_hidden_state
        logits = base.lm_head(h[:, P - 1:])
        keep = torch.arange(Lmax)[None, :] < lens_t[idx][:, None]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cv.reshape(-1), reduction="none")
        return (ce.view(-1, Lmax) * keep).sum() / keep.sum()

    t1 = time.time()
    curve, _ = train_loop(model, params, cfg, step_loss, f"train {name}")
    seconds = time.time() - t1
    log = {"name": name, "config": cfg.as_dict(), "corpus_sha256": sha256_file(CORPUS_FILE),
           "code_version": code_version(), "base": lm.fingerprint, "rows": len(rows),
           "rows_dropped_long_prompt": dropped, "params": sum(p.numel() for p in base.parameters()),
           "params_trained": sum(p.numel() for p in params), "lora_targets": list(LORA_TARGETS),
           "train_seconds": round(seconds, 1), "total_seconds": round(time.time() - t0, 1),
           "tokens_processed": tokens[0], "tokens_per_second": round(tokens[0] / max(seconds, 1e-9)),
           "threads": torch.get_num_threads(), "loadavg_end": os.getloadavg()[0], "loss_curve": curve,
           "epochs": round(cfg.steps * cfg.batch_size / len(prompts), 2)}
    model.save_pretrained(out)  # adapter_config.json + adapter_model.safetensors
    tok.save_pretrained(out)
    return log


def ensure_trained(name: str, cfg: OrganismConfig | None = None, cache: Path | None = None) -> Path:
    """The cache directory of organism ``name``, trained now (atomically, once) if it is not there yet."""
    cfg = cfg or get_config(name)
    base = ""
    if cfg.kind == "lora":
        from ..models import dequantised_smollm2_dir
        base = dequantised_smollm2_dir(cache)[1]
    if cfg.init_from:
        base = model_dir(cfg.init_from, get_config(cfg.init_from), cache).name
    out = model_dir(name, cfg, cache, base)

    def build(tmp: Path) -> None:
        fn = train_smollm2_refusal if cfg.kind == "lora" else train_organism
        log = fn(name, cfg, tmp, cache)
        (tmp / "train_log.json").write_text(json.dumps(log, indent=1))

    return build_once(out, build)


def train_all(names: list[str] | None = None) -> dict:
    """Train (or find) every full-size organism in this process; returns name -> train_log."""
    names = names or ["organism-ar", "organism-dlm", "smollm2-135m-refusal"]
    return {n: json.loads((ensure_trained(n) / "train_log.json").read_text()) for n in names}
