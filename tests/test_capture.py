"""Capture conventions ("after" / "decision"), the authors'-code poolings, untraced AR generation and the text the
refusal dictionary reads (contiguous committed runs), on the tiny models (offline, deterministic, seconds)."""
import numpy as np
import pytest
import torch
from conftest import PROMPTS

import srilib
from srilib.models import mask_predict
from srilib.judges import is_refusal, text_signals
from srilib.samplers import ARSampler
from srilib.samplers.diffusion import ARDiffusionSampler, DiffusionSampler, decode_runs
from srilib.traces import RUN_SEPARATOR, TraceSet, TraceStore, generate_traces


@pytest.fixture(scope="module")
def dlm():
    return srilib.load_model("tiny-dlm")


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


# ------------------------------------------------------------------------------------------ the setting

@pytest.mark.parametrize("cls", [ARSampler, DiffusionSampler, ARDiffusionSampler])
def test_capture_is_validated_and_recorded(cls):
    assert cls().capture == "after"
    with pytest.raises(ValueError, match="'after'.*'decision'"):
        cls(capture="before")
    assert cls(capture="decision").config()["capture"] == "decision"


def test_capture_changes_the_key_and_is_in_the_metadata(tiny_ar, tmp_path):
    store = TraceStore(tmp_path)
    a = generate_traces(tiny_ar, PROMPTS, ARSampler(steps=4), store=store, progress=False)
    d = generate_traces(tiny_ar, PROMPTS, ARSampler(steps=4, capture="decision"), store=store, progress=False)
    assert a.meta["key"] != d.meta["key"]
    assert a.meta["capture"] == "after" and d.meta["capture"] == "decision"
    assert d.meta["empty_pooling"] == "producer" and a.meta["empty_pooling"] == "canvas"
    assert TraceSet.from_file(store.path(d.meta["key"])).meta["capture"] == "decision"


@pytest.mark.parametrize("cls", [ARSampler, DiffusionSampler])
def test_poolings_can_be_restricted(tiny_ar, dlm, cls):
    lm = tiny_ar if cls is ARSampler else dlm
    ts = cls(steps=4, poolings=("generated",)).trace_batch(lm, PROMPTS[:1], [-1])
    assert ts.poolings == ["generated"]
    with pytest.raises(ValueError, match="records the poolings"):
        cls(poolings=("nope",))


# ------------------------------------------------------------------------------------------ AR

@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_ar_generate_gives_the_traced_texts_without_hidden_states(tiny_ar, temperature):
    s = ARSampler(steps=7, temperature=temperature, seed=3)
    ts = s.trace_batch(tiny_ar, PROMPTS, [-1])
    seen = []
    h = tiny_ar.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw.get("output_hidden_states")),
                                           with_kwargs=True)
    try:
        texts = s.generate(tiny_ar, PROMPTS)
    finally:
        h.remove()
    assert texts == ts.texts
    assert seen and not any(seen)  # no hidden states requested


def test_ar_decision_capture(tiny_ar):
    after = ARSampler(steps=6).trace_batch(tiny_ar, PROMPTS, [-1, 1])
    dec = ARSampler(steps=6, capture="decision").trace_batch(tiny_ar, PROMPTS, [-1, 1])
    assert (after.tokens == dec.tokens).all() and after.step_texts == dec.step_texts
    assert dec.meta["capture"] == "decision" and after.meta["capture"] == "after"
    # the deciding pass of step t holds tokens 1..t-1: the "after" vector of step t - 1
    np.testing.assert_allclose(dec.pooled["generated"][:, 1:], after.pooled["generated"][:, :-1], atol=1e-6)
    # step 1: nothing generated yet; the state that chooses token 1 stands in, flagged
    np.testing.assert_allclose(dec.pooled["generated"][:, 0], dec.pooled["producer"][:, 0], atol=1e-6)
    assert dec.empty[:, 0].all() and not dec.empty[:, 1:].any() and not after.empty.any()
    for k in ("producer", "producer_all"):  # read from the deciding passes under both conventions
        np.testing.assert_allclose(dec.pooled[k], after.pooled[k], atol=1e-6)


def test_ar_decision_capture_runs_no_extra_pass(tiny_ar):
    T = 5
    counts = {}
    for name, run in [("after", lambda: ARSampler(steps=T).trace_batch(tiny_ar, PROMPTS[:1], [-1])),
                      ("decision",
                       lambda: ARSampler(steps=T, capture="decision").trace_batch(tiny_ar, PROMPTS[:1], [-1])),
                      ("generate", lambda: ARSampler(steps=T).generate(tiny_ar, PROMPTS[:1]))]:
        calls, h = _count_forwards(tiny_ar.model)
        try:
            run()
        finally:
            h.remove()
        counts[name] = len(calls)
    ts = ARSampler(steps=T).trace_batch(tiny_ar, PROMPTS[:1], [-1])
    assert ts.committed[0, -1].sum() == T, "the tiny model should not stop early here"
    assert counts == {"after": T + 1, "decision": T, "generate": T}


SAMPLED = dict(temperature=1.0, seed=1)  # tiny-ar's greedy output repeats one token; sampling varies it


@pytest.fixture
def ar_with_early_eos():
    """tiny-ar (sampled, seeded) whose end-of-text is the third token PROMPTS[1] draws, so that this prompt
    stops at step 3 while the others in the batch go on."""
    lm = srilib.load_model("tiny-ar")
    first = ARSampler(steps=8, **SAMPLED).trace_batch(lm, PROMPTS, [-1])
    stop = int(first.tokens[1, -1, 2])
    assert stop not in first.tokens[1, -1, :2] and stop not in first.tokens[[0, 2], -1]
    lm.model.generation_config.eos_token_id = [stop]
    return lm, stop


def _states(lm, prompt, gen):
    """Last-layer states of prompt + generated tokens, one unpadded forward pass: [P + len(gen), D]."""
    ids = lm.encode([prompt])[0]
    with torch.no_grad():
        hs = lm.model(torch.tensor([ids + gen]), output_hidden_states=True).hidden_states[-1][0].numpy()
    return hs, len(ids)


def test_producer_stops_at_end_of_text_and_producer_all_keeps_averaging(ar_with_early_eos):
    lm, stop = ar_with_early_eos
    T = 8
    ts = ARSampler(steps=T, **SAMPLED).trace_batch(lm, PROMPTS, [-1])
    dec = ARSampler(steps=T, capture="decision", **SAMPLED).trace_batch(lm, PROMPTS, [-1])
    assert (ts.tokens == dec.tokens).all()
    for b, prompt in enumerate(PROMPTS):
        gen = [int(t) for t in ts.tokens[b, -1] if t >= 0]
        e = len(gen) - 1  # index of the last token (end-of-text, or step T)
        assert (e == 2) == (b == 1)
        hs, P = _states(lm, prompt, gen)
        h = [hs[P - 1 + i] for i in range(e + 1)]  # the state that produced token i
        prod, allp = ts.pooled["producer"][b, :, 0], ts.pooled["producer_all"][b, :, 0]
        # authors' Llama wrapper: h_1..h_e, then h_e repeated up to T entries, then a running mean over them all
        entries = h + [h[e]] * (T - e - 1)
        expect_all = np.cumsum(entries, 0) / np.arange(1, T + 1)[:, None]
        np.testing.assert_allclose(allp, expect_all, atol=1e-5)
        np.testing.assert_allclose(dec.pooled["producer_all"][b, :, 0], expect_all, atol=1e-5)
        np.testing.assert_allclose(prod[: e + 1], expect_all[: e + 1], atol=1e-5)
        for t in range(e + 1, T):
            np.testing.assert_allclose(prod[t], prod[e], atol=1e-6)  # ours: constant after end-of-text
            assert not np.allclose(allp[t], allp[t - 1])  # theirs: keeps changing
        # generated: "after" = tokens 1..t at their own positions; "decision" = tokens 1..t-1
        g = [hs[P + i] for i in range(e + 1)]
        for t in range(T):
            k = min(t, e) + 1
            np.testing.assert_allclose(ts.pooled["generated"][b, t, 0], np.mean(g[:k], 0), atol=1e-5)
            if t > 0:
                k = min(t, e)  # a finished generation has no deciding pass after its last token
                np.testing.assert_allclose(dec.pooled["generated"][b, t, 0], np.mean(g[:k], 0), atol=1e-5)
    assert dec.empty[:, 0].all() and not dec.empty[:, 1:].any()


# ------------------------------------------------------------------------------------------ DLM

@pytest.mark.parametrize("sampler", [DiffusionSampler(gen_length=16, steps=4),
                                     DiffusionSampler(gen_length=16, steps=4, block_length=8),
                                     ARDiffusionSampler(gen_length=8, steps=4)])
def test_dlm_decision_capture(dlm, sampler):
    from dataclasses import replace
    after = sampler.trace_batch(dlm, PROMPTS, [-1])
    dec = replace(sampler, capture="decision").trace_batch(dlm, PROMPTS, [-1])
    assert (after.tokens == dec.tokens).all() and after.step_texts == dec.step_texts
    assert (after.predictions == dec.predictions).all()
    np.testing.assert_allclose(dec.pooled["canvas"], dec.pooled["canvas_decision"], atol=0)
    # the authors' LLaDA pooling does not depend on the capture convention
    np.testing.assert_allclose(after.pooled["canvas_decision"], dec.pooled["canvas_decision"], atol=1e-5)
    if isinstance(sampler, DiffusionSampler):  # one pass per step: step t decides after step t - 1's pass
        np.testing.assert_allclose(dec.pooled["canvas"][:, 1:], after.pooled["canvas"][:, :-1], atol=1e-5)
        np.testing.assert_allclose(dec.pooled["generated"][:, 1:], after.pooled["generated"][:, :-1], atol=1e-5)
        # step 1 decides on an empty canvas: every pooling is the canvas mean, flagged empty
        assert dec.empty[:, 0].all()
        for k in ("generated", "committed"):
            np.testing.assert_allclose(dec.pooled[k][:, 0], dec.pooled["canvas"][:, 0], atol=1e-6)
    else:  # dlm-ar, 2 positions per traced step: step 1 is decided with position 0 committed
        assert not dec.empty[:, 0].any() and dec.committed[:, 0].sum(-1).tolist() == [2] * len(PROMPTS)


def test_canvas_decision_is_the_mean_of_the_deciding_pass(dlm):
    """Authors' LLaDA code: at step t, the mean over every response position of the pass run on the canvas as it
    was before step t's commit."""
    L, T = 12, 4
    ts = DiffusionSampler(gen_length=L, steps=T).trace_batch(dlm, [PROMPTS[0]], [-1])
    ids = dlm.encode([PROMPTS[0]])[0]
    for t in range(T):
        canvas = np.full(L, dlm.mask_id) if t == 0 else np.where(ts.committed[0, t - 1], ts.tokens[0, t - 1],
                                                                  dlm.mask_id)
        x = torch.tensor([ids + canvas.tolist()])
        _, hidden = mask_predict(dlm, x, torch.ones_like(x), [-1], start=len(ids))
        np.testing.assert_allclose(ts.pooled["canvas_decision"][0, t, 0], hidden[0, :, 0].mean(0).numpy(),
                                   atol=1e-5)
        # ours ("after"): the pass after step t's commit
        x[0, len(ids):] = torch.tensor(np.where(ts.committed[0, t], ts.tokens[0, t], dlm.mask_id))
        _, hidden = mask_predict(dlm, x, torch.ones_like(x), [-1], start=len(ids))
        np.testing.assert_allclose(ts.pooled["canvas"][0, t, 0], hidden[0, :, 0].mean(0).numpy(), atol=1e-5)


def test_dlm_decision_capture_runs_exactly_the_untraced_passes(dlm, monkeypatch):
    import srilib.models as dlm_mod
    n = []
    orig = dlm_mod.mask_predict
    monkeypatch.setattr(dlm_mod, "mask_predict", lambda *a, **k: n.append(1) or orig(*a, **k))
    counts = {}
    for name, s in [("after", DiffusionSampler(gen_length=8, steps=4)),
                    ("decision", DiffusionSampler(gen_length=8, steps=4, capture="decision"))]:
        n.clear()
        s.trace_batch(dlm, PROMPTS[:1], [-1])
        counts[name] = len(n)
        n.clear()
        s.generate(dlm, PROMPTS[:1])
        counts[name + "/generate"] = len(n)
    assert counts == {"after": 5, "after/generate": 4, "decision": 4, "decision/generate": 4}


# ------------------------------------------------------------------------------------------ refusal text

def test_text_signal_reads_only_contiguous_committed_text(dlm):
    """'I' <mask> 'cannot': a reader's text closes the gap up ("I cannot"), the refusal dictionary must not."""
    gapped = ARDiffusionSampler(gen_length=8, steps=8, prefill={0: "I", 2: " cannot"}).trace_batch(dlm, ["Hi"], [-1])
    assert gapped.step_texts[0][0] == "I cannot" and not gapped.committed[0, 0, 1]  # step 1 commits nothing
    assert is_refusal(gapped.step_texts[0][0])
    assert gapped.step_runs[0][0] == "I" + RUN_SEPARATOR + " cannot"
    assert text_signals(gapped.match_texts)[0, 0] == 1.0
    together = ARDiffusionSampler(gen_length=8, steps=8, prefill={0: "I cannot"}).trace_batch(dlm, ["Hi"], [-1])
    assert together.match_texts[0][0] == "I cannot"
    assert text_signals(together.match_texts)[0, 0] == 0.0


def test_decode_runs_splits_at_gaps(dlm):
    tok = dlm.tokenizer
    i, cannot = tok("I", add_special_tokens=False)["input_ids"], tok(" cannot", add_special_tokens=False)["input_ids"]
    row = np.array(i + [0] + cannot + [0, 0])
    keep = np.array([True, False] + [True] * len(cannot) + [False, False])
    joined = [tok.decode(row[keep].tolist())]
    assert decode_runs(tok, row[None], keep[None], joined) == ["I" + RUN_SEPARATOR + " cannot"]
    keep2 = np.array([True, True] + [True] * len(cannot) + [False, False])
    same = [tok.decode(row[keep2].tolist())]
    assert decode_runs(tok, row[None], keep2[None], same) == same  # no gap: the reader's text


def test_step_runs_round_trip_and_ar_runs_equal_step_texts(tiny_ar, dlm, tmp_path):
    ts = generate_traces(tiny_ar, PROMPTS, ARSampler(steps=4), store=TraceStore(tmp_path), progress=False)
    assert ts.step_runs == ts.step_texts and ts.match_texts == ts.step_texts
    d = generate_traces(dlm, PROMPTS, DiffusionSampler(gen_length=16, steps=4), store=TraceStore(tmp_path),
                        progress=False)
    back = TraceSet.from_file(TraceStore(tmp_path).path(d.meta["key"]))
    assert back.step_runs == d.step_runs and back.subset([2, 0]).step_runs == [d.step_runs[2], d.step_runs[0]]
    assert any(RUN_SEPARATOR in x for row in d.step_runs for x in row)  # low-confidence leaves gaps early on


def test_old_traces_without_runs_still_load(dlm, tmp_path):
    import io
    import json
    d = DiffusionSampler(gen_length=16, steps=4).trace_batch(dlm, PROMPTS, [-1])
    with np.load(io.BytesIO(d.to_bytes())) as z:
        arrays = {k: z[k] for k in z.files}
    text = json.loads(str(arrays.pop("text")))
    text["format"] = 1
    del text["step_runs"]
    path = tmp_path / "old.npz"
    np.savez(path, text=np.array(json.dumps(text)), **arrays)
    old = TraceSet.from_file(path)
    assert old.step_runs is None
    with pytest.warns(RuntimeWarning, match="step_runs"):
        assert old.match_texts == old.step_texts  # gaps: falls back, loudly
    ar_like = old.subset([0])
    ar_like.committed = np.tril(np.ones((4, 16), bool), 3)[None]  # contiguous prefix: nothing to warn about
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ar_like.match_texts == ar_like.step_texts
