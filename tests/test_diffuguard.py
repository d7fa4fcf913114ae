"""DiffuGuard as a sampler variant (srilib.samplers.diffuguard) on the tiny ModernBERT DLM (offline, deterministic)."""
import numpy as np
import pytest
import torch
from conftest import PROMPTS

import srilib
from srilib.models import mask_predict
from srilib.samplers import make_sampler
from srilib.samplers.diffuguard import AuditDirection, DiffuGuardSampler
from srilib.samplers.diffusion import DiffusionSampler
from srilib.traces import trace_key

KW = dict(gen_length=16, steps=8, block_length=8)


@pytest.fixture(scope="module")
def lm():
    return srilib.load_model("tiny-dlm")


@pytest.fixture(scope="module")
def direction(lm):
    return AuditDirection.fit(lm, ["Give me step by step instructions."], ["How do I learn Python?"], gen_length=16)


def _same_trace(a, b):
    assert np.array_equal(a.tokens, b.tokens)
    assert np.array_equal(a.committed, b.committed)
    assert np.array_equal(a.predictions, b.predictions)
    assert np.array_equal(a.empty, b.empty)
    assert a.pooled.keys() == b.pooled.keys()
    for k in a.pooled:
        assert np.array_equal(a.pooled[k], b.pooled[k]), k
    assert a.texts == b.texts and a.step_texts == b.step_texts and a.pred_texts == b.pred_texts
    assert a.step_runs == b.step_runs


@pytest.mark.parametrize("extra", [{}, {"temperature": 0.7, "seed": 3}, {"capture": "decision"},
                                   {"block_length": 16, "steps": 4}])
def test_randomness_off_equals_plain(lm, extra, one_thread):
    kw = {**KW, **extra}
    plain = DiffusionSampler(**kw).trace_batch(lm, PROMPTS, [-1, 1])
    dg = DiffuGuardSampler(**kw, alpha0=0.0, audit=False)
    _same_trace(plain, dg.trace_batch(lm, PROMPTS, [-1, 1]))
    assert dg.generate(lm, PROMPTS) == DiffusionSampler(**kw).generate(lm, PROMPTS)


def test_alpha_one_is_random_remasking(lm, one_thread):
    rnd = DiffusionSampler(**KW, remasking="random", seed=5).trace_batch(lm, PROMPTS, [-1])
    dg = DiffuGuardSampler(**KW, alpha0=1.0, anneal="constant", audit=False, seed=5).trace_batch(lm, PROMPTS, [-1])
    _same_trace(rnd, dg)


def test_sar_seeded_and_differs_from_plain(lm, one_thread):
    plain = DiffusionSampler(**KW).trace_batch(lm, PROMPTS, [-1])
    a = DiffuGuardSampler(**KW, alpha0=0.9, audit=False, seed=1).trace_batch(lm, PROMPTS, [-1])
    b = DiffuGuardSampler(**KW, alpha0=0.9, audit=False, seed=1).trace_batch(lm, PROMPTS, [-1])
    _same_trace(a, b)
    assert not np.array_equal(a.committed, plain.committed)  # a different commit order
    c = DiffuGuardSampler(**KW, alpha0=0.9, audit=False, seed=2).trace_batch(lm, PROMPTS, [-1])
    assert not np.array_equal(a.committed, c.committed)


def test_anneal_schedules():
    s = DiffuGuardSampler(**KW, alpha0=0.6, audit=False)  # the authors' adaptive_step: per block (4 steps each here)
    assert [s.alpha(t, 8) for t in range(1, 9)] == pytest.approx([0.6, 0.4, 0.2, 0.0] * 2)
    s = DiffuGuardSampler(**KW, alpha0=0.5, anneal="linear", audit=False)
    assert [s.alpha(t, 4) for t in (1, 2, 3, 4)] == [0.5, 0.375, 0.25, 0.125]
    s = DiffuGuardSampler(**KW, alpha0=0.5, anneal="cosine", audit=False)
    assert s.alpha(1, 4) == 0.5 and s.alpha(3, 4) == pytest.approx(0.25)
    s = DiffuGuardSampler(**KW, alpha0=0.5, anneal="constant", audit=False)
    assert {s.alpha(t, 4) for t in (1, 2, 3, 4)} == {0.5}


def test_audit_flags_above_threshold_and_repairs(lm, direction, one_thread):
    base = dict(**KW, alpha0=0.0, sp_mode="direction", audit_direction=direction, remask_ratio=0.6,
                repair_first_block_only=False, sp_logit=False)
    never = DiffuGuardSampler(**base, sp_threshold=1.0)
    ts = never.trace_batch(lm, PROMPTS, [-1])
    _same_trace(DiffusionSampler(**KW).trace_batch(lm, PROMPTS, [-1]), ts)  # nothing flagged: plain
    log = ts.meta["audit"]
    assert [[e["block"] for e in row] for row in log] == [[0, 8]] * len(PROMPTS)
    assert not any(e["flagged"] for row in log for e in row)
    # the score is cos(mean block state - center, direction), computed by hand for the first block
    from srilib.models import left_pad
    pad = lm.pad_id if lm.pad_id != lm.mask_id else lm.eos_ids[0]
    x, attn = left_pad(lm.validate_prompts(PROMPTS, reserve=16), pad, lm.device)
    first = ts.tokens[:, 3]  # after block 0's last step (4 steps per block); block 1 still masked
    canvas = torch.where(torch.as_tensor(first) >= 0, torch.as_tensor(first, dtype=torch.long), int(lm.mask_id))
    _, hidden = mask_predict(lm, torch.cat([x, canvas], 1), torch.cat([attn, torch.ones_like(canvas)], 1),
                             [-1], start=x.shape[1])
    want = direction.score(hidden[:, 0:8, 0].mean(1)).numpy()
    np.testing.assert_allclose([row[0]["score"] for row in log], want, rtol=1e-5, atol=1e-6)
    # a threshold between the rows' scores flags exactly the rows above it
    s0 = np.array([row[0]["score"] for row in log])
    thr = float(np.sort(s0)[0] + np.sort(s0)[1]) / 2
    ts2 = DiffuGuardSampler(**base, sp_threshold=thr).trace_batch(lm, PROMPTS, [-1])
    flagged = np.array([row[0]["flagged"] for row in ts2.meta["audit"]])
    assert np.array_equal(flagged, s0 > thr) and flagged.any() and not flagged.all()
    assert [row[0]["remasked"] for row in ts2.meta["audit"]] == [4 if f else 0 for f in flagged]  # floor(0.6 * 8)
    # unflagged rows keep block 0 exactly as the plain sampler decoded it
    for b in np.flatnonzero(~flagged):
        assert np.array_equal(ts2.tokens[b, 3, :8], ts.tokens[b, 3, :8])


def test_repair_remasks_and_regenerates(lm, direction, one_thread):
    always = DiffuGuardSampler(**KW, alpha0=0.0, sp_mode="direction", audit_direction=direction, sp_threshold=-1.0,
                               remask_ratio=0.9, refinement_steps=3, repair_first_block_only=False)
    ts = always.trace_batch(lm, PROMPTS, [-1])
    for row in ts.meta["audit"]:
        assert [e["remasked"] for e in row] == [7] * 2 and all(e["flagged"] for e in row)
    assert ts.committed[:, -1].all()  # regenerated: the final canvas is fully committed
    assert ts.committed[:, 3, :8].all() and not ts.committed[:, 3, 8:].any()  # repair lands within block 0's step
    assert ts.tokens.shape[1] == always.T == 8  # refinement passes are not recorded steps
    assert np.array_equal(ts.predictions[:, 3, :8], ts.tokens[:, 3, :8])
    # the repair counted the remasked positions and refilled them by the model: count through a spy
    calls = []
    orig = always._after_block

    def spy(lm_, x, attn, P, canvas, done, lo, hi, gen, step, n):
        before = canvas.clone()
        out = orig(lm_, x, attn, P, canvas, done, lo, hi, gen, step, n)
        calls.append((lo, before, canvas.clone(), done[:, lo:hi].clone()))
        return out
    always._after_block = spy
    assert always.generate(lm, PROMPTS) == ts.texts
    assert [c[0] for c in calls] == [0, 8]
    for lo, before, after, done in calls:  # guided: every remasked position got a different token back
        assert done.all()
        assert [int(n) for n in (before[:, lo:lo + 8] != after[:, lo:lo + 8]).sum(1)] == [7] * len(PROMPTS)
    # repair_prefill=False: prefilled positions are never remasked
    pre = DiffuGuardSampler(**KW, alpha0=0.0, sp_threshold=0.0, prefill={0: "Sure"}, repair_prefill=False)
    tp = pre.trace_batch(lm, PROMPTS, [-1])
    n_fixed = len(lm.tokenizer("Sure", add_special_tokens=False)["input_ids"])
    assert tp.meta["audit"][0][0]["remasked"] == int(0.9 * (8 - n_fixed))
    sure = lm.tokenizer("Sure", add_special_tokens=False)["input_ids"]
    assert (tp.tokens[:, -1, :n_fixed] == sure).all()
    # as in the authors' code (default): the attack's canvas text is part of the block the repair may remask
    tp = DiffuGuardSampler(**KW, alpha0=0.0, sp_threshold=0.0, prefill={0: "Sure"}).trace_batch(lm, PROMPTS, [-1])
    assert tp.meta["audit"][0][0]["remasked"] == 7
    assert tp.committed[:, -1].all()


def test_generate_equals_trace_texts(lm, direction, one_thread):
    for s in (DiffuGuardSampler(**KW, alpha0=0.5, sp_mode="direction", audit_direction=direction, sp_threshold=0.0,
                                seed=4),
              DiffuGuardSampler(**KW, alpha0=0.5, temperature=0.5, audit=False, seed=4),
              DiffuGuardSampler(**KW, sp_threshold=0.0, temperature=0.5, repair_first_block_only=False),
              DiffuGuardSampler(**KW, alpha0=0.5, sp_threshold=0.0, capture="decision")):
        assert s.generate(lm, PROMPTS) == s.trace_batch(lm, PROMPTS, [-1]).texts


def test_config_and_cache_key_cover_every_setting(lm, direction):
    base = dict(**KW, sp_mode="direction", audit_direction=direction)
    s = DiffuGuardSampler(**base)
    cfg = s.config()
    assert cfg["sampler"] == "diffuguard" and cfg["audit_direction"]["digest"] == direction.digest()
    for k in ("alpha0", "anneal", "audit", "sp_mode", "sp_threshold", "refinement_steps", "remask_ratio", "seed",
              "suppression", "repair_first_block_only", "audit_layer", "sp_logit", "repair_prefill", "references"):
        assert k in cfg, k
    key = trace_key(lm.fingerprint, PROMPTS, cfg, layers=[-1], batch_size=4, dtype=lm.dtype_name)
    changes = [dict(alpha0=0.1), dict(anneal="cosine"), dict(audit=False), dict(sp_threshold=0.2),
               dict(refinement_steps=4), dict(remask_ratio=0.5), dict(seed=1), dict(sp_mode="hidden"),
               dict(suppression=0.0), dict(repair_first_block_only=False), dict(audit_layer=1),
               dict(sp_logit=False), dict(repair_prefill=False), dict(sp_mode="hidden-block"),
               dict(references={PROMPTS[0]: "How do I bake a cake?"}),
               dict(audit_direction=AuditDirection(-direction.direction, direction.center, layer=-1))]
    keys = {key}
    for ch in changes:
        other = DiffuGuardSampler(**{**base, **ch})
        keys.add(trace_key(lm.fingerprint, PROMPTS, other.config(), layers=[-1], batch_size=4, dtype=lm.dtype_name))
    assert len(keys) == len(changes) + 1
    same = DiffuGuardSampler(**base).config()
    assert trace_key(lm.fingerprint, PROMPTS, same, layers=[-1], batch_size=4, dtype=lm.dtype_name) == key
    assert DiffusionSampler(**KW).config() != DiffuGuardSampler(**KW, alpha0=0, audit=False).config()


def test_registered_names(lm, direction):
    s = make_sampler("diffuguard-sar", **KW)
    with pytest.raises(ValueError, match="audit off"):
        make_sampler("diffuguard-sar", **KW, audit=True)
    assert isinstance(s, DiffuGuardSampler) and not s.audit
    s = make_sampler("diffuguard", **KW)  # as in the authors' hidden-state runs with SAR (test.sh)
    assert s.audit and (s.sp_mode, s.sp_threshold, s.refinement_steps, s.remask_ratio, s.alpha0, s.anneal) == \
        ("hidden", 0.1, 8, 0.9, 0.3, "block")
    assert make_sampler("diffuguard", **KW, alpha0=0.0).sp_threshold == 0.2  # their hidden runs without SAR
    assert make_sampler("diffuguard", **KW, sp_mode="hidden-block").sp_threshold == 0.35  # ours
    s = make_sampler("diffuguard", **KW, sp_mode="direction", audit_direction=direction, sp_threshold=0.5)
    assert s.sp_threshold == 0.5


def test_from_anchors():
    class A:
        mu_harmful = np.array([[0.0, 0.0], [3.0, 1.0]])
        mu_harmless = np.array([[0.0, 0.0], [1.0, 1.0]])
        layer, pooling = -1, "generated"
    d = AuditDirection.from_anchors(A())
    assert np.allclose(d.direction, [2, 0]) and np.allclose(d.center, [2, 1])
    h = torch.tensor([[5.0, 1.0], [0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_allclose(d.score(h).numpy(), [1.0, -1.0, 0.0], atol=1e-6)


def test_errors(direction):
    with pytest.raises(ValueError, match="alpha0"):
        DiffuGuardSampler(**KW, alpha0=1.5, audit=False)
    with pytest.raises(ValueError, match="anneal"):
        DiffuGuardSampler(**KW, anneal="exp", audit=False)
    with pytest.raises(ValueError, match="audit_direction"):
        DiffuGuardSampler(**KW, sp_mode="direction")
    with pytest.raises(ValueError, match="sp_threshold"):
        DiffuGuardSampler(**KW, sp_threshold=3)
    with pytest.raises(ValueError, match="refinement_steps"):
        DiffuGuardSampler(**KW, refinement_steps=0)
    with pytest.raises(ValueError, match="remask_ratio"):
        DiffuGuardSampler(**KW, remask_ratio=0)
    with pytest.raises(ValueError, match="sp_mode"):
        DiffuGuardSampler(**KW, sp_mode="text")
    with pytest.raises(ValueError, match="low-confidence"):
        DiffuGuardSampler(**KW, remasking="random", audit=False)
    with pytest.raises(ValueError, match="AuditDirection"):
        DiffuGuardSampler(**KW, audit_direction=np.ones(4))
    with pytest.raises(ValueError, match="non-zero"):
        AuditDirection(np.zeros(4), None)


def test_run_spec_names_it(tmp_path):
    from srilib.experiment import Experiment, resolve_run
    ex = Experiment(steps=8, gen_length=16, cache=str(tmp_path))
    s = ex.sampler(resolve_run("tiny-dlm@diffuguard-sar:b8"))
    assert isinstance(s, DiffuGuardSampler) and s.block_length == 8 and not s.audit and s.steps == 8
    full = ex.sampler(resolve_run("tiny-dlm@diffuguard"))
    assert full.audit and full.sp_mode == "hidden" and full.block_length == 16


def test_generate_traces_round_trip(lm, direction, tmp_path):
    from srilib.traces import TraceStore, generate_traces
    s = DiffuGuardSampler(**KW, alpha0=0.5, audit_direction=direction, sp_threshold=-1.0)
    store = TraceStore(tmp_path)
    ts = generate_traces(lm, PROMPTS, s, store=store, batch_size=len(PROMPTS), progress=False)
    again = generate_traces(lm, PROMPTS, s, store=store, batch_size=len(PROMPTS), progress=False)
    assert again.meta["key"] == ts.meta["key"] and (again.tokens == ts.tokens).all()
    assert again.meta["sampler_config"]["audit_direction"]["digest"] == direction.digest()
    assert len(again.meta["audit"]) == len(PROMPTS)


def test_hidden_block_audit_ours(lm, one_thread):
    """sp_mode='hidden-block' (ours): 1 - cos(block state at the block's first decision pass, the prompt's own
    state)."""
    from srilib.models import left_pad
    s = DiffuGuardSampler(**KW, alpha0=0.0, sp_threshold=2.0, sp_mode="hidden-block")  # never reached
    ts = s.trace_batch(lm, PROMPTS, [-1])
    _same_trace(DiffusionSampler(**KW).trace_batch(lm, PROMPTS, [-1]), ts)
    pad = lm.pad_id if lm.pad_id != lm.mask_id else lm.eos_ids[0]
    x, attn = left_pad(lm.validate_prompts(PROMPTS, reserve=16), pad, lm.device)
    _, hp = mask_predict(lm, x, attn, [-1], start=0)
    w = attn.float()
    prompt = (w[..., None] * hp[:, :, 0]).sum(1) / w.sum(1, keepdim=True)
    canvas = torch.full((len(PROMPTS), 16), int(lm.mask_id))  # block 0 starts from the all-mask canvas
    _, hb = mask_predict(lm, torch.cat([x, canvas], 1), torch.cat([attn, torch.ones_like(canvas)], 1), [-1],
                         start=x.shape[1])
    want = 1 - torch.nn.functional.cosine_similarity(hb[:, :8, 0].mean(1), prompt, dim=-1)
    got = [row[0]["score"] for row in ts.meta["audit"]]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    thr = float(np.sort(got)[1])  # >= threshold flags: the two highest rows
    tf = DiffuGuardSampler(**KW, alpha0=0.0, sp_threshold=thr, sp_mode="hidden-block", sp_logit=False
                           ).trace_batch(lm, PROMPTS, [-1])
    flagged = [row[0]["flagged"] for row in tf.meta["audit"]]
    assert flagged == [g >= thr for g in got] and sum(flagged) == 2
    assert [row[0]["remasked"] for row in tf.meta["audit"]] == [7 if f else 0 for f in flagged]
    assert [row[1]["remasked"] for row in tf.meta["audit"]] == [0] * 3  # only the first block is repaired


def test_logit_conflict_audit(lm, direction, one_thread):
    """sp_logit under the block modes (ours): 4 * p(accept cues) * p(refuse cues), averaged over the block, from
    the block's last deciding pass; OR-ed with the hidden test."""
    from srilib.samplers.diffuguard import ACCEPT_CUES, REFUSE_CUES
    ts = DiffuGuardSampler(**KW, alpha0=0.0, sp_threshold=2.0, sp_mode="hidden-block").trace_batch(lm, PROMPTS, [-1])
    conflict = np.array([row[0]["conflict"] for row in ts.meta["audit"]])
    # by hand: the pass that decided block 0's last step saw the canvas after step 3 (index 2)
    from srilib.models import left_pad
    pad = lm.pad_id if lm.pad_id != lm.mask_id else lm.eos_ids[0]
    x, attn = left_pad(lm.validate_prompts(PROMPTS, reserve=16), pad, lm.device)
    prev = torch.as_tensor(ts.tokens[:, 2], dtype=torch.long)
    canvas = torch.where(prev >= 0, prev, int(lm.mask_id))
    logits, _ = mask_predict(lm, torch.cat([x, canvas], 1), torch.cat([attn, torch.ones_like(canvas)], 1), [],
                             start=x.shape[1])
    blk = logits[:, :8].float()
    blk[..., lm.mask_id] = -torch.inf
    p = torch.softmax(blk, -1)

    def ids(phrases):
        return sorted({t for ph in phrases for t in lm.tokenizer(ph, add_special_tokens=False)["input_ids"]})
    want = (4 * p[..., ids(ACCEPT_CUES)].sum(-1) * p[..., ids(REFUSE_CUES)].sum(-1)).mean(1)
    np.testing.assert_allclose(conflict, want.numpy(), rtol=1e-5, atol=1e-7)
    # OR-ed: in direction mode (scores in [-1, 1]) with a threshold at the lowest conflict, every row is flagged
    D = direction.direction.shape[0]
    neg = AuditDirection(-np.ones(D, dtype=np.float32), np.zeros(D, dtype=np.float32))
    thr = float(conflict.min())
    kw = dict(**KW, alpha0=0.0, sp_threshold=thr, sp_mode="direction", audit_direction=neg)
    on = DiffuGuardSampler(**kw).trace_batch(lm, PROMPTS, [-1]).meta["audit"]
    off = DiffuGuardSampler(**kw, sp_logit=False).trace_batch(lm, PROMPTS, [-1]).meta["audit"]
    assert all(row[0]["flagged"] for row in on)
    assert [row[0]["flagged"] for row in off] == [row[0]["score"] > thr for row in off]
    assert [row[0]["conflict"] for row in off] == [None] * len(PROMPTS)
