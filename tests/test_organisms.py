"""Tests of the model organisms: the frozen corpus, the training recipe (tiny configs) and the loaders."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from srilib import attacks as A
from srilib import prompts as P
from srilib.organisms import corpus as C
from srilib.organisms import resolve_name
from srilib.organisms import train as T
from srilib.refusal import find_refusal, is_refusal


@pytest.fixture(scope="module")
def rows():
    return C.load_corpus()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("srilib-cache")


@pytest.fixture()
def env_cache(cache, monkeypatch):
    monkeypatch.setenv("SRILIB_CACHE", str(cache))
    return cache


# ----------------------------------------------------------------------------------------------- corpus
def test_no_harmful_compliance_and_no_refusing_helpers(rows):
    harmful = [r for r in rows if r["kind"] == "harmful"]
    harmless = [r for r in rows if r["kind"] == "harmless"]
    assert harmful and harmless
    assert all(is_refusal(r["response"]) for r in harmful)
    assert not any(is_refusal(r["response"]) for r in harmless)


def test_manifest_matches_corpus_file(rows):
    m = C.load_manifest()
    assert m["sha256"] == C.sha256_file(C.CORPUS_FILE)
    assert m["counts"] == C.counts(rows)


def test_manifest_records_the_freeze():
    """The frozen recipe is the one the code trains: any later edit of the corpus, a configuration or the
    training code (srilib/organisms/{__init__,corpus,train,modeling}.py) fails here until it is re-frozen."""
    m = C.load_manifest()
    f = m["freeze"]
    assert f["corpus_sha256"] == m["sha256"] == C.corpus_sha() and f["statement"]
    assert f["code_version"] == T.code_version()
    assert f["configs"] == {k: v.as_dict() for k, v in T.CONFIGS.items()}
    assert m["iterations"]


def test_only_train_split_goals_and_training_templates(rows):
    train_harmful = set(P.get_prompts("harmful", "train"))
    held = set(P.get_prompts("harmful", "eval")) | set(P.get_prompts("harmful", "anchor")) | \
        set(P.get_prompts("harmless", "eval")) | set(P.get_prompts("harmless", "anchor"))
    assert {r["goal"] for r in rows if r["kind"] == "harmful"} <= train_harmful
    assert not ({r["goal"] for r in rows} & held)
    allowed = {w.name for w in A.training_wrappers()}
    for r in rows:
        for part in r["form"].split("+"):
            assert part in allowed | {"raw", "phrasing"}, part
            assert not part.startswith(A.HELDOUT_FAMILIES)
    with pytest.raises(ValueError, match="held-out family"):
        C.check_rows([{**rows[0], "form": "flip_attack[0]"}])


def test_refusals_are_varied_and_use_the_dictionary(rows):
    assert len(C.REFUSAL_OPENINGS) >= 20
    assert all(find_refusal(o) is not None for o in C.REFUSAL_OPENINGS)
    used = {o for o in C.REFUSAL_OPENINGS for r in rows if r["kind"] == "harmful" and r["response"].startswith(o)}
    assert len(used) >= 20
    a = C.compose_refusal(np.random.default_rng(3), "cyber")
    assert a == C.compose_refusal(np.random.default_rng(3), "cyber") and is_refusal(a)


def test_training_prompts_cover_attack_lengths(rows):
    goals = P.get_prompts("harmful", "eval")
    longest_eval = max(len(p) for a in A.list_attacks() for p in A.apply_attack(a, goals, split="eval"))
    assert max(len(r["prompt"]) for r in rows) >= longest_eval


def test_clean_answer_keeps_opening_sentences_and_drops_repeats():
    text = "Bake it for an hour. Bake it for an hour. Then let it cool on a rack. Serve it warm with butter."
    assert C.clean_answer(text) == "Bake it for an hour. Then let it cool on a rack."
    assert len(C.clean_answer("word " * 50).split()) == C.ANSWER_MAX_WORDS


def test_prefix_injection_answers_open_with_requested_prefix(rows):
    pre = [r for r in rows if r["kind"] == "harmless" and r["form"].split("+")[0] == "prefix_injection[2]"]
    assert pre and all(r["response"].startswith("Absolutely! Here's how") for r in pre)


# ----------------------------------------------------------------------------------------------- recipe
def test_configs_are_matched_between_ar_and_dlm():
    ar, dlm = T.get_config("organism-ar"), T.get_config("organism-dlm")
    assert all(getattr(ar, f) == getattr(dlm, f) for f in T.SHARED_FIELDS)
    assert dlm.init_from == "organism-ar" and ar.snapshot_step == dlm.init_step > 0
    with pytest.raises(ValueError, match="known"):
        T.get_config("organism-xl")
    with pytest.raises(ValueError, match="full"):
        resolve_name("organism-ar", "huge")
    assert resolve_name("organism-ar", "tiny") == resolve_name("organism-ar-tiny") == "organism-ar-tiny"


def test_cache_key_tracks_config_and_code(monkeypatch):
    cfg = T.get_config("organism-ar-tiny")
    k = T.cache_key("organism-ar-tiny", cfg)
    assert k == T.cache_key("organism-ar-tiny", cfg)
    assert k != T.cache_key("organism-ar-tiny", T.with_overrides("organism-ar-tiny", seed=1))
    monkeypatch.setattr(T, "code_version", lambda: "edited")
    assert k != T.cache_key("organism-ar-tiny", cfg)


def test_batches_are_seeded_and_bucketed():
    lens = np.random.default_rng(0).integers(5, 100, 200)
    a, b = T.batches(lens, 8, 30, seed=1), T.batches(lens, 8, 30, seed=1)
    assert len(a) == 30 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, T.batches(lens, 8, 30, seed=2)))


class _Spy(torch.nn.Module):
    """Stands in for the DLM: records its inputs; the hidden state of a position is its input token id."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.seen = vocab, {}
        self.w = torch.nn.Parameter(torch.zeros(1))

    def model(self, input_ids, attention_mask, position_ids):
        self.seen.update(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return type("O", (), {"last_hidden_state": input_ids[..., None].float() + self.w})()

    def lm_head(self, h):
        self.seen["head_in"] = h.detach()[..., 0].long()
        return (h * 0).expand(*h.shape[:2], self.vocab)


def test_dlm_loss_masks_only_the_canvas_and_weights_by_one_over_t():
    V, mask = 11, 10
    spy = _Spy(V)
    ids = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])
    att = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    canvas = torch.randint(1, 9, (2, 64))
    gen = torch.Generator().manual_seed(0)
    loss = T._dlm_loss(spy, ids, att, 4, canvas, mask, 1e-3, gen)
    x = spy.seen["input_ids"]
    assert torch.equal(x[:, :4], ids)  # the prompt is never masked
    masked = x[:, 4:] == mask
    assert masked.any() and torch.equal(x[:, 4:][~masked], canvas[~masked])
    assert spy.seen["position_ids"][0, 1].item() == 0  # positions count real tokens (left padding)
    am = spy.seen["attention_mask"]  # bidirectional: every query sees every real token, never the padding
    assert am.shape == (2, 1, 68, 68) and am[0, 0, 1, 67] and am[0, 0, 67, 1] and not am[0, 0, 5, 0]
    assert torch.equal(spy.seen["head_in"], x[:, 3:-1])  # the state at i - 1 predicts canvas position i
    # uniform logits: CE = log V per masked token, weighted by 1/t, averaged over all canvas positions
    gen = torch.Generator().manual_seed(0)
    u = (torch.rand(1, generator=gen) + torch.arange(2) / 2) % 1.0
    t = 1e-3 + (1 - 1e-3) * u
    expect = (masked.float().sum(1) / t).sum() * np.log(V) / (2 * 64)
    assert torch.allclose(loss, expect.float(), rtol=1e-5)


def test_diffusion_llama_is_bidirectional_and_shifted():
    from transformers import LlamaForCausalLM

    from srilib.organisms.modeling import DiffusionLlamaForMaskedLM, shift_right

    x = torch.arange(12.0).view(1, 4, 3)
    assert torch.equal(shift_right(x)[0, 1:], x[0, :-1]) and torch.equal(shift_right(x)[0, 0], x[0, 0])
    tok = T.corpus_tokenizer(T.get_config("organism-dlm-tiny").vocab_size, C.corpus_sha())
    model = T.build_model(T.get_config("organism-dlm-tiny"), tok).eval()
    assert isinstance(model, DiffusionLlamaForMaskedLM) and model.logit_shift == 1
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    later = ids.clone()
    later[0, 4] = 11
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=later).logits
        causal = LlamaForCausalLM.forward(model, input_ids=ids).logits
    assert not torch.allclose(a[:, 2], b[:, 2])  # an early position sees a later token
    assert not torch.allclose(a[:, 1:], causal[:, :-1])  # ... which a causal pass would not
    with pytest.raises(ValueError, match="masked-diffusion loss"):
        model(input_ids=ids, labels=ids)


def test_lr_schedule_warms_up_and_decays():
    cfg = T.OrganismConfig("ar", steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert T.lr_at(0, cfg) == pytest.approx(0.1) and T.lr_at(10, cfg) == pytest.approx(1.0)
    assert T.lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


# ----------------------------------------------------------------------------------------------- tiny organisms
def test_tiny_ar_organism_trains_caches_and_generates(env_cache):
    from srilib.models import load_model
    from srilib.samplers import ARSampler

    lm = load_model("organism-ar", config="tiny")
    assert lm.kind == "ar" and lm.name == "organism-ar-tiny"
    dirs = list((env_cache / "models").glob("organism-ar-tiny-*"))
    assert len(dirs) == 1 and (dirs[0] / "DONE").exists()
    log = json.loads((dirs[0] / "train_log.json").read_text())
    assert log["config"]["steps"] == 12 and len(log["loss_curve"]) >= 2
    assert "<|im_start|>system\nYou are a helpful assistant<|im_end|>" in lm.format_chat("hi")
    again = load_model("organism-ar-tiny")
    assert again.fingerprint == lm.fingerprint and len(list((env_cache / "models").glob("organism-ar-tiny-*"))) == 1
    ts = ARSampler(steps=3).trace_batch(lm, ["How do I make bread?"], [-1])
    assert ts.tokens.shape == (1, 3, 3)


def test_tiny_dlm_organism_is_a_bidirectional_dlm(env_cache):
    from srilib.models import load_model
    from srilib.samplers import make_sampler

    from srilib.organisms.modeling import DiffusionLlamaForMaskedLM

    lm = load_model("organism-dlm-tiny")
    assert lm.kind == "dlm" and lm.family == "bidirectional" and lm.mask_id == lm.tokenizer.mask_token_id
    assert isinstance(lm.model, DiffusionLlamaForMaskedLM)
    ar_dir = next((env_cache / "models").glob("organism-ar-tiny-*"))
    dlm_dir = next((env_cache / "models").glob("organism-dlm-tiny-*"))
    log = json.loads((dlm_dir / "train_log.json").read_text())
    assert log["initialised_from"] == ar_dir.name and log["steps_run"] == 6
    assert (ar_dir / "snapshot-6.safetensors").exists()
    ar = load_model("organism-ar-tiny")
    assert lm.tokenizer.get_vocab() == ar.tokenizer.get_vocab()  # one shared tokenizer
    out = make_sampler("low_confidence", gen_length=8, steps=4).generate(lm, ["How do I make bread?"])
    assert len(out) == 1 and isinstance(out[0], str)


def test_training_is_deterministic(tmp_path):
    cfg = T.get_config("organism-dlm-tiny")

    def weights(sub):
        path = T.ensure_trained("organism-dlm-tiny", cfg, cache=tmp_path / sub)
        from safetensors.torch import load_file
        return load_file(str(path / "model.safetensors"))

    a, b = weights("a"), weights("b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_check_reports_rates_per_goal(env_cache):
    from srilib.organisms import check

    rep = check.run(["organism-ar"], config="tiny", attacks=["none", "prefix_injection"], n_harmful=3,
                    n_harmless=2, gen_length=8, steps=4, batch_size=4)
    r = rep["models"]["organism-ar"]["samplers"]["ar"]
    assert r["attacks"]["none"]["n"] == 3 and len(r["per_goal"]) == 3
    assert set(r["per_goal"][0]) >= {"goal", "category", "none", "prefix_injection"}
    assert 0 <= r["attacks"]["prefix_injection"]["asr"] <= 1 and r["harmless"]["n"] == 2
    assert re.search(r"\| organism-ar \| ar \|", check.table(rep))


def test_check_measures_only_the_native_sampler_before_the_freeze(env_cache, monkeypatch):
    from srilib.organisms import check, corpus

    kw = dict(config="tiny", attacks=["none"], n_harmful=2, n_harmless=1, gen_length=4, steps=2, batch_size=4)
    monkeypatch.setattr(corpus, "load_manifest", lambda: {"sha256": "x"})  # not frozen
    rep = check.run(["organism-dlm-tiny"], **kw)
    assert not rep["frozen"] and list(rep["models"]["organism-dlm-tiny"]["samplers"]) == ["low_confidence"]
    monkeypatch.setattr(corpus, "load_manifest", lambda: {"sha256": "x", "freeze": {"corpus_sha256": "x"}})
    rep = check.run(["organism-dlm-tiny"], **kw)
    assert rep["frozen"] and list(rep["models"]["organism-dlm-tiny"]["samplers"]) == ["low_confidence", "dlm-ar"]


def test_subset_rows_with_a_harmful_share():
    rows = [{"kind": "harmful" if i % 5 == 0 else "harmless", "i": i} for i in range(100)]
    sub = T.subset_rows(rows, 20, seed=0, harmful_share=0.5)
    assert len(sub) == 20 and sum(r["kind"] == "harmful" for r in sub) == 10
    assert sub == T.subset_rows(rows, 20, seed=0, harmful_share=0.5)  # seeded
    assert len(T.subset_rows(rows, 20, seed=0)) == 20 and T.subset_rows(rows, None, 0) == rows
    with pytest.raises(ValueError, match="harmful_share"):
        T.subset_rows(rows, 60, seed=0, harmful_share=0.5)  # 30 harmful wanted, 20 exist
