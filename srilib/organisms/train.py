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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .corpus import CORPUS_FILE, load_corpus, sha256_file

SYSTEM_PROMPT = "You are a helpful assistant"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Files whose code decides the weights (the corpus file's sha covers corpus.py and lexicon.py; the loaders in
# __init__.py and weights.py and the checks in check.py do not, so editing them never retrains anything).
TRAIN_SOURCES = ("train.py", "modeling.py")
# One thread by default: on a shared 2-core machine a 2-thread pool spent most of its time waiting for a
# descheduled worker (6x slower per step, measured); SRILIB_TRAIN_THREADS overrides (not part of the key).
THREADS = int(os.environ.get("SRILIB_TRAIN_THREADS", "1"))


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that decides an organism's weights (all of it goes into the cache key).

    ``kind`` is "ar", "dlm" or "lora" (SmolLM2 with a low-rank adapter of rank ``lora_rank`` on the projections of
    its top ``train_layers`` blocks). ``steps`` x ``batch_size`` sequences are seen in training; ``max_rows``
    keeps a seeded subset of the corpus (None = all rows).
    """

    kind: str
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 768
    vocab_size: int = 1536
    canvas: int = 32
    max_prompt: int = 400
    batch_size: int = 16
    steps: int = 1600
    lr: float = 2e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    t_eps: float = 1e-3
    train_layers: int = 0
    snapshot_step: int = 0  # AR: also save the weights reached after this many steps (0 = none)
    init_from: str = ""  # DLM: start from this organism's snapshot ...
    init_step: int = 0  # ... taken after this many steps, and train the remaining steps
    rewarmup: int = 20  # DLM: linear re-warm-up (steps) of the learning rate after initialisation
    lm_loss_steps: int = 0  # AR: the first steps also model the prompt tokens (<= snapshot_step: shared phase)
    max_rows: int | None = None
    harmful_share: float | None = None  # with max_rows: share of harmful rows in the subset (None: uniform)
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, OrganismConfig] = {
    "organism-ar": OrganismConfig("ar", vocab_size=2048, steps=2400, snapshot_step=1200, lm_loss_steps=1200),
    "organism-dlm": OrganismConfig("dlm", vocab_size=2048, steps=2400, init_from="organism-ar", init_step=1200),
    "smollm2-135m-refusal": OrganismConfig("lora", batch_size=8, steps=300, lr=1e-3, warmup=10, min_lr_ratio=0.1,
                                           weight_decay=0.0, train_layers=8, max_rows=2400, harmful_share=0.25,
                                           canvas=48, max_prompt=400),
    # seconds-scale variants for tests and the smoke profile
    "organism-ar-tiny": OrganismConfig("ar", hidden=32, layers=2, heads=4, intermediate=64, vocab_size=512,
                                       canvas=24, max_prompt=160, batch_size=8, steps=12, warmup=2,
                                       max_rows=96, snapshot_step=6),
    "organism-dlm-tiny": OrganismConfig("dlm", hidden=32, layers=2, heads=4, intermediate=64, vocab_size=512,
                                        canvas=24, max_prompt=160, batch_size=8, steps=12, warmup=2,
                                        max_rows=96, init_from="organism-ar-tiny", init_step=6, rewarmup=2),
    "smollm2-135m-refusal-tiny": OrganismConfig("lora", batch_size=2, steps=2, lr=5e-5, warmup=1,
                                                train_layers=1, max_rows=8, canvas=16, max_prompt=120, lora_rank=2,
                                                lora_alpha=4),
}


def get_config(name: str) -> OrganismConfig:
    if name not in CONFIGS:
        raise ValueError(f"no organism config {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the organism sources that decide the weights (see ``TRAIN_SOURCES``)."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in TRAIN_SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def cache_key(name: str, cfg: OrganismConfig, base: str = "") -> str:
    """Key of a trained organism: corpus sha + config + code version (+ base-model fingerprint)."""
    payload = {"name": name, "corpus": sha256_file(CORPUS_FILE), "config": cfg.as_dict(), "code": code_version(),
               "base": base}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(rows: list[dict], vocab_size: int):
    """Byte-level BPE trained on the corpus text, with ChatML specials, a mask token and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [SYSTEM_PROMPT] + [r["prompt"] for r in rows] + [r["response"] for r in rows]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   mask_token="<|mask|>", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML
    return fast


@lru_cache(maxsize=4)
def corpus_tokenizer(vocab_size: int, corpus_sha: str):
    """The organisms' shared tokenizer for this corpus (trained once per process; ``corpus_sha`` keys the cache)."""
    if corpus_sha != sha256_file(CORPUS_FILE):
        raise RuntimeError("the corpus changed while running; restart the process")
    return train_tokenizer(load_corpus(), vocab_size)


def chat_prompt(tok, prompt: str) -> str:
    """The model input for one user prompt: system prompt + ChatML (same as LoadedModel.format_chat)."""
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def encode_rows(tok, rows: list[dict], canvas: int, max_prompt: int, eos_id: int) -> tuple[list, np.ndarray,
                                                                                             np.ndarray, int]:
    """Prompt ids (lists), canvas ids [N, canvas] (response + end-of-turn fill) and response lengths [N].

    The response length counts the response tokens plus the first end-of-turn token (capped at ``canvas``).
    Rows whose prompt exceeds ``max_prompt`` tokens are dropped; their number is returned last.
    """
    prompts = tok([chat_prompt(tok, r["prompt"]) for r in rows], add_special_tokens=False)["input_ids"]
    resps = tok([r["response"] for r in rows], add_special_tokens=False)["input_ids"]
    keep = [i for i, p in enumerate(prompts) if len(p) <= max_prompt]
    cv = np.full((len(keep), canvas), eos_id, dtype=np.int64)
    lens = np.zeros(len(keep), dtype=np.int64)
    for j, i in enumerate(keep):
        r = resps[i][:canvas]
        cv[j, : len(r)] = r
        lens[j] = min(len(r) + 1, canvas)
    return [prompts[i] for i in keep], cv, lens, len(rows) - len(keep)


def batches(prompt_lens: np.ndarray, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` index batches: each epoch is a seeded permutation, bucketed by prompt length (less padding)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    n = len(prompt_lens)
    while len(out) < steps:
        perm = rng.permutation(n)
        mega = batch_size * 16
        epoch = []
        for s in range(0, n, mega):
            chunk = perm[s: s + mega]
            chunk = chunk[np.argsort(prompt_lens[chunk], kind="stable")]
            epoch += [chunk[k: k + batch_size] for k in range(0, len(chunk), batch_size)
                      if len(chunk[k: k + batch_size]) == batch_size]
        out += [epoch[i] for i in rng.permutation(len(epoch))]
    return out[:steps]


def collate(prompts: list[list[int]], idx: np.ndarray, pad_id: int):
    """Left-padded prompt block [B, P], its attention mask, and the shared prompt width P."""
    import torch

    width = max(len(prompts[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(idx), width), dtype=torch.long)
    for b, i in enumerate(idx):
        p = prompts[i]
        ids[b, width - len(p):] = torch.tensor(p)
        att[b, width - len(p):] = 1
    return ids, att, width


def lr_at(step: int, cfg: OrganismConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` x the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


# ----------------------------------------------------------------------------------------------- models
def build_model(cfg: OrganismConfig, tok):
    """A fresh (seeded) Llama: causal LM ("ar") or its bidirectional masked-diffusion variant ("dlm")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .modeling import DiffusionLlamaForMaskedLM

    if cfg.kind not in ("ar", "dlm"):
        raise ValueError(f"unknown organism kind {cfg.kind!r}; use 'ar' or 'dlm'")
    torch.manual_seed(cfg.seed)
    mcfg = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                       max_position_embeddings=1024, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       bos_token_id=None, tie_word_embeddings=True)
    if cfg.kind == "dlm":
        mcfg.mask_token_id = tok.mask_token_id
        return DiffusionLlamaForMaskedLM(mcfg)
    model = LlamaForCausalLM(mcfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def _ar_loss(model, ids, att, P, canvas, lens, prompt_loss: bool = False):
    """Next-token cross-entropy on the response tokens (+ first end-of-turn) of the canvas; with ``prompt_loss``
    also on every real token of the prompt (language modelling of the whole conversation)."""
    import torch
    import torch.nn.functional as F

    x = torch.cat([ids, canvas], 1)
    a = torch.cat([att, torch.ones_like(canvas)], 1)
    pos = (a.cumsum(-1) - 1).clamp(min=0)
    h = model.model(input_ids=x[:, :-1], attention_mask=a[:, :-1], position_ids=pos[:, :-1]).last_hidden_state
    L = canvas.shape[1]
    keep = torch.arange(L)[None, :] < lens[:, None]
    if prompt_loss:
        logits = model.lm_head(h)  # position i predicts token i + 1
        mask = (a[:, 1:] * a[:, :-1]).bool()
        mask[:, P - 1:] = keep  # the canvas part: response tokens and the first end-of-turn only
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1), reduction="none")
        return (ce.view(x.shape[0], -1) * mask).sum() / mask.sum()
    logits = model.lm_head(h[:, P - 1:])  # position P-1+j predicts canvas token j
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), canvas.reshape(-1), reduction="none")
    return (ce.view(-1, L) * keep).sum() / keep.sum()


def _dlm_loss(model, ids, att, P, canvas, mask_id, t_eps, gen):
    """Masked-diffusion SFT loss (LLaDA): mask canvas tokens with prob t, CE on masked tokens weighted 1/t."""
    import torch
    import torch.nn.functional as F

    B, L = canvas.shape
    u = (torch.rand(1, generator=gen) + torch.arange(B) / B) % 1.0  # stratified t across the batch
    t = t_eps + (1 - t_eps) * u
    masked = torch.rand((B, L), generator=gen) < t[:, None]
    noisy = torch.where(masked, torch.full_like(canvas, mask_id), canvas)
    x = torch.cat([ids, noisy], 1)
    a = torch.cat([att, torch.ones_like(canvas)], 1)
    pos = (a.cumsum(-1) - 1).clamp(min=0)
    from .modeling import bidirectional_mask

    h = model.model(input_ids=x, attention_mask=bidirectional_mask(a), position_ids=pos).last_hidden_state
    logits = model.lm_head(h[:, P - 1: -1])  # the state at i - 1 predicts canvas position i (logit shift)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), canvas.reshape(-1), reduction="none")
    return (ce.view(B, L) * masked / t[:, None]).sum() / (B * L)


def subset_rows(rows: list[dict], n: int | None, seed: int, harmful_share: float | None = None) -> list[dict]:
    """All rows, or a seeded subset of ``n`` rows: a uniform sample (harmful and harmless in about corpus
    proportion), or, with ``harmful_share``, that share of harmful rows and the rest harmless."""
    if n is None or n >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    if harmful_share is None:
        idx = rng.permutation(len(rows))[:n]
    else:
        harm = [i for i, r in enumerate(rows) if r["kind"] == "harmful"]
        safe = [i for i, r in enumerate(rows) if r["kind"] != "harmful"]
        k = int(round(n * harmful_share))
        if k > len(harm) or n - k > len(safe):
            raise ValueError(f"harmful_share={harmful_share} of {n} rows needs {k} harmful and {n - k} harmless "
                             f"rows; the corpus has {len(harm)} and {len(safe)}")
        idx = np.concatenate([rng.choice(harm, k, replace=False), rng.choice(safe, n - k, replace=False)])
    return [rows[i] for i in sorted(idx)]


def _train_loop(model, params, cfg: OrganismConfig, step_loss, desc: str, start: int = 0, stop: int | None = None,
                opt_state: dict | None = None, rewarm: bool = False) -> tuple[list[list[float]], object]:
    """AdamW over steps ``start .. stop - 1`` (default: to ``cfg.steps``) with the global schedule.

    ``opt_state`` resumes an optimiser (an AR run continued from its snapshot is the same run); ``rewarm``
    re-warms the learning rate linearly over ``cfg.rewarmup`` steps (a DLM started from an AR snapshot).
    Returns the (step, smoothed loss) curve and the optimiser.
    """
    import torch
    from tqdm.auto import tqdm

    stop = cfg.steps if stop is None else stop
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    model.train()
    curve, run = [], None
    bar = tqdm(range(start, stop), desc=desc, unit="step")
    for step in bar:
        warm = min(1.0, (step - start + 1) / cfg.rewarmup) if rewarm else 1.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg) * warm
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        v = float(loss.detach())
        run = v if run is None else 0.95 * run + 0.05 * v
        if step % 10 == 0 or step == stop - 1:
            bar.set_postfix(loss=f"{run:.3f}")
            curve.append([step, round(run, 4)])
    model.eval()
    return curve, opt


SHARED_FIELDS = ("hidden", "layers", "heads", "intermediate", "vocab_size", "canvas", "max_prompt", "batch_size",
                 "steps", "lr", "warmup", "min_lr_ratio", "weight_decay", "max_rows", "seed")


class _Data:
    """The tokenizer, encoded rows and batch plan of one organism config (shared by snapshot and full runs)."""

    def __init__(self, cfg: OrganismConfig):
        rows = subset_rows(load_corpus(), cfg.max_rows, cfg.seed, cfg.harmful_share)
        self.tok = tok = corpus_tokenizer(cfg.vocab_size, sha256_file(CORPUS_FILE))
        self.prompts, canvas, lens, self.dropped = encode_rows(tok, rows, cfg.canvas, cfg.max_prompt,
                                                               tok.eos_token_id)
        self.rows = len(rows)
        self.plan = batches(np.array([len(p) for p in self.prompts]), cfg.batch_size, cfg.steps, cfg.seed)
        import torch

        self.canvas, self.lens = torch.from_numpy(canvas), torch.from_numpy(lens)
        self.tokens = 0

    def loss(self, model, cfg: OrganismConfig, step: int, gen=None):
        idx = self.plan[step]
        ids, att, P = collate(self.prompts, idx, self.tok.pad_token_id)
        self.tokens += ids.numel() + len(idx) * cfg.canvas
        if cfg.kind == "ar":
            return _ar_loss(model, ids, att, P, self.canvas[idx], self.lens[idx], step < cfg.lm_loss_steps)
        return _dlm_loss(model, ids, att, P, self.canvas[idx], self.tok.mask_token_id, cfg.t_eps, gen)


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
        data = _Data(cfg)
        model = build_model(cfg, data.tok)
        curve, opt = _train_loop(model, list(model.parameters()), cfg, lambda k: data.loss(model, cfg, k),
                                 f"train {name} (steps 0-{cfg.snapshot_step})", 0, cfg.snapshot_step)
        save_weights(model, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "log.json").write_text(json.dumps({"loss_curve": curve, "seconds": round(time.time() - t0, 1),
                                                  "tokens_processed": data.tokens}))

    return _build_once(out, build)


def train_organism(name: str, cfg: OrganismConfig, out: Path, cache: Path | None = None) -> dict:
    """Train an "ar" or "dlm" organism and save model and tokenizer to ``out``.

    Both continue from the AR snapshot (an AR organism with ``snapshot_step``, or a DLM's ``init_from``): the AR
    with its optimiser state, the DLM with a fresh optimiser re-warmed over ``rewarmup`` steps.
    """
    import torch
    from safetensors.torch import load_model as load_weights

    torch.set_num_threads(THREADS)
    t0 = time.time()
    data = _Data(cfg)
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
    curve, _ = _train_loop(model, list(model.parameters()), cfg, lambda k: data.loss(model, cfg, k, gen),
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


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(cfg: OrganismConfig, n_layers: int):
    """The peft adapter of ``smollm2-135m-refusal``: rank ``lora_rank`` on every projection of the top
    ``train_layers`` blocks."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                      layers_to_transform=list(range(n_layers - cfg.train_layers, n_layers)), bias="none",
                      task_type="CAUSAL_LM")


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
    curve, _ = _train_loop(model, params, cfg, step_loss, f"train {name}")
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


def model_dir(name: str, cfg: OrganismConfig, cache: Path | None = None, base: str = "") -> Path:
    from ..traces import default_cache_dir

    return (cache or default_cache_dir()) / "models" / f"{name}-{cache_key(name, cfg, base)}"


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive inter-process lock (POSIX ``flock``; a no-op where it does not exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; two processes may then train the same artifact twice
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(out: Path, build) -> Path:
    """``out`` built by ``build(tmp)`` into a temporary directory and renamed atomically, under a lock, so that
    parallel processes that need the same artifact train it once (the others wait and reuse it)."""
    if (out / "DONE").exists():
        return out
    with _lock(out.parent / ".locks" / f"{out.name}.lock"):
        if (out / "DONE").exists():
            return out
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            (tmp / "DONE").write_text(json.dumps({"key": out.name}))
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


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

    return _build_once(out, build)


def train_all(names: list[str] | None = None) -> dict:
    """Train (or find) every full-size organism in this process; returns name -> train_log."""
    names = names or ["organism-ar", "organism-dlm", "smollm2-135m-refusal"]
    return {n: json.loads((ensure_trained(n) / "train_log.json").read_text()) for n in names}


def with_overrides(name: str, **kw) -> OrganismConfig:
    """A copy of a named config with some fields changed (for probes; changes the cache key)."""
    return replace(get_config(name), **kw)
