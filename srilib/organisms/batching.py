"""The organisms' data and losses: corpus rows encoded into prompts and canvases, seeded batch plans, and the AR and
masked-diffusion losses on a batch."""
from __future__ import annotations

import numpy as np

from .corpus import CORPUS_FILE, load_corpus
from ..traces import sha256_file
from .recipe import OrganismConfig
from .tokenizer import chat_prompt, corpus_tokenizer


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


def ar_loss(model, ids, att, P, canvas, lens, prompt_loss: bool = False):
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


def dlm_loss(model, ids, att, P, canvas, mask_id, t_eps, gen):
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

class Data:
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
            return ar_loss(model, ids, att, P, self.canvas[idx], self.lens[idx], step < cfg.lm_loss_steps)
        return dlm_loss(model, ids, att, P, self.canvas[idx], self.tok.mask_token_id, cfg.t_eps, gen)
