"""Diffusion samplers and canvas attacks on the tiny ModernBERT DLM (offline, deterministic, seconds)."""
import numpy as np
import pytest
import torch
from conftest import PROMPTS

import srilib
from srilib.canvas_attacks import (AFFIRMATIVE, CANVAS_ATTACKS, MIN_CONTENT, STEP_MARKERS, CanvasAttack,
                                   get_canvas_attack, interleaved_prefill)
from srilib.models import mask_predict
from srilib.samplers import ARSampler, make_sampler
from srilib.samplers.diffusion import (ARDiffusionSampler, DiffusionSampler, visible, normalize_prefill,
                                       num_transfer_tokens)
from srilib.traces import TraceStore, generate_traces


@pytest.fixture(scope="module")
def lm():
    return srilib.load_model("tiny-dlm")


@pytest.fixture(scope="module")
def base(lm):
    """One greedy trace reused by several tests: 16 positions, 5 steps (4+3+3+3+3 tokens)."""
    return DiffusionSampler(gen_length=16, steps=5).trace_batch(lm, PROMPTS, [-1, 1])


def _new_per_step(ts):
    c = ts.committed.sum(-1)
    return np.diff(np.concatenate([np.zeros((len(ts), 1), int), c], 1), axis=1)


def _check_invariants(ts):
    N, T, L = ts.tokens.shape
    assert (ts.tokens >= 0).sum() == ts.committed.sum() and ((ts.tokens >= 0) == ts.committed).all()
    for t in range(1, T):
        assert (ts.committed[:, t - 1] <= ts.committed[:, t]).all()  # never remasked
        same = ts.committed[:, t - 1]
        assert (ts.tokens[:, t][same] == ts.tokens[:, t - 1][same]).all()  # committed tokens never change
    assert (ts.predictions[ts.committed] == ts.tokens[ts.committed]).all()
    assert (ts.predictions >= 0).all()


# ------------------------------------------------------------------------------------------ format
def test_trace_format(lm, base):
    N, T, L = len(PROMPTS), 5, 16
    assert base.tokens.shape == (N, T, L) and base.tokens.dtype == np.int32
    assert base.committed.dtype == bool and base.predictions.dtype == np.int32
    assert set(base.poolings) == {"generated", "committed", "canvas", "canvas_decision"}
    for v in base.pooled.values():
        assert v.shape == (N, T, 2, 32) and v.dtype == np.float32
    assert base.layers == [-1, 1] and base.phi().shape == (N, T, 32)
    assert len(base.step_texts) == N and all(len(s) == T for s in base.step_texts)
    assert len(base.pred_texts) == N and all(len(s) == T for s in base.pred_texts)
    assert base.texts == [s[-1] for s in base.step_texts] == [s[-1] for s in base.pred_texts]
    end = set(lm.eos_ids) | {lm.pad_id}
    final = [[int(x) for x in row] for row in base.tokens[:, -1]]
    final = [row[: next((i for i, x in enumerate(row) if x in end), len(row))] for row in final]
    assert base.texts == lm.tokenizer.batch_decode(final, skip_special_tokens=True)
    assert base.meta["sampler"] == "low_confidence"
    _check_invariants(base)
    assert base.committed[:, -1].all()  # every position committed by the end


def test_schedule_and_single_block(base):
    assert num_transfer_tokens(torch.tensor([16, 4, 0]), 5).tolist() == [[4, 3, 3, 3, 3], [1, 1, 1, 1, 0],
                                                                          [0, 0, 0, 0, 0]]
    assert (_new_per_step(base) == [4, 3, 3, 3, 3]).all()


def test_blocks_commit_left_to_right(lm):
    ts = DiffusionSampler(gen_length=16, steps=8, block_length=4).trace_batch(lm, PROMPTS, [-1])
    _check_invariants(ts)
    assert (_new_per_step(ts) == 2).all()
    for t in range(8):
        blk = t // 2
        assert not ts.committed[:, t, (blk + 1) * 4:].any()  # nothing beyond the current block
        assert ts.committed[:, t, : blk * 4].all()  # earlier blocks complete
    assert ts.committed[:, 1, :4].all()


def test_dlm_ar_one_position_per_step(lm):
    ts = ARDiffusionSampler(gen_length=6, steps=6).trace_batch(lm, PROMPTS, [-1])
    _check_invariants(ts)
    for t in range(6):
        assert ts.committed[:, t, : t + 1].all() and not ts.committed[:, t, t + 1:].any()
    assert ts.meta["sampler"] == "dlm-ar" and make_sampler("dlm-ar", gen_length=6, steps=6).name == "dlm-ar"
    # a longer canvas: T traced steps, gen_length / T tokens each, still strictly left to right
    ts2 = ARDiffusionSampler(gen_length=8, steps=4).trace_batch(lm, PROMPTS, [-1])
    assert ts2.T == 4
    for t in range(4):
        assert ts2.committed[:, t, : 2 * (t + 1)].all() and not ts2.committed[:, t, 2 * (t + 1):].any()
    # same weights, same canvas: dlm-ar decodes what block-length-1 diffusion decodes
    d = DiffusionSampler(gen_length=8, steps=8, block_length=1).trace_batch(lm, PROMPTS, [-1])
    assert (d.tokens[:, -1] == ts2.tokens[:, -1]).all() and (d.tokens[:, 1::2] == ts2.tokens).all()
    for k in ts2.pooled:  # the traced steps are every second state of the one-token-per-step run
        np.testing.assert_allclose(d.pooled[k][:, 1::2], ts2.pooled[k], atol=1e-5)
    assert [x[1::2] for x in d.pred_texts] == ts2.pred_texts


@pytest.mark.parametrize("remasking", ["random", "entropy", "maskgit_plus", "topk_margin"])
def test_other_remasking_rules(lm, base, remasking):
    ts = make_sampler(remasking, gen_length=16, steps=5).trace_batch(lm, PROMPTS[:2], [-1])
    _check_invariants(ts)
    assert (_new_per_step(ts) == [4, 3, 3, 3, 3]).all() and ts.committed[:, -1].all()
    if remasking == "maskgit_plus":  # greedy: top-1 probability is the proposal's probability
        assert (ts.tokens == base.tokens[:2]).all()
    if remasking == "random":  # a different order of commitment than low_confidence
        assert (ts.committed != base.committed[:2]).any()


# ------------------------------------------------------------------------------------------ conventions
def test_activation_and_prediction_convention(lm, base):
    """Step t's activation is read from a pass over the canvas after step t; its predictions come from the pass
    over the canvas after step t-1 (the one that decided step t)."""
    ids = lm.encode(PROMPTS[:1])[0]
    P = len(ids)
    end = set(lm.eos_ids) | {lm.pad_id}

    def run(canvas_row):
        c = np.where(canvas_row >= 0, canvas_row, lm.mask_id)
        x = torch.tensor([ids + c.tolist()])
        return mask_predict(lm, x, torch.ones_like(x), [-1], start=P)

    for t in range(base.T):
        _, hidden = run(base.tokens[0, t])
        np.testing.assert_allclose(base.pooled["canvas"][0, t, 0], hidden[0, :, 0].mean(0).numpy(), atol=1e-5)
        w = base.committed[0, t]
        np.testing.assert_allclose(base.pooled["committed"][0, t, 0], hidden[0, w, 0].mean(0).numpy(), atol=1e-5)
        stop = np.cumsum([int(x) in end for x in base.tokens[0, t]]) > 0
        vis = w & ~stop  # 'generated': committed positions before the first committed end-of-text token
        gen = hidden[0, vis, 0].mean(0).numpy() if vis.any() else np.zeros(32)
        np.testing.assert_allclose(base.pooled["generated"][0, t, 0], gen, atol=1e-5)
        prev = base.tokens[0, t - 1] if t else np.full(16, -1)
        logits, _ = run(prev)
        logits[..., lm.mask_id] = -torch.inf
        masked = ~base.committed[0, t]
        assert (base.predictions[0, t][masked] == logits[0].argmax(-1).numpy()[masked]).all()
    assert not np.allclose(base.pooled["canvas"], base.pooled["generated"])


def test_visible_positions_stop_at_first_end_of_text(lm):
    end = torch.tensor(sorted(set(lm.eos_ids) | {lm.pad_id}))
    eos = lm.eos_ids[0]
    tokens = torch.tensor([[40, 41, eos, 42, lm.mask_id], [40, 41, 42, 43, 44]])
    done = torch.tensor([[True, True, True, True, False], [True, False, True, True, True]])
    assert visible(tokens, done, end).tolist() == [[True, True, False, False, False],
                                                    [True, False, True, True, True]]


def test_generated_falls_back_to_canvas_when_nothing_is_generated(lm):
    """While only end-of-text is committed (here prefilled at position 0) no token is visible: 'generated' is the
    canvas mean of that step and the step is flagged empty."""
    s = DiffusionSampler(gen_length=8, steps=4, prefill={0: lm.tokenizer.eos_token})
    ts = s.trace_batch(lm, PROMPTS[:1], [-1])
    assert ts.texts == [""] and ts.empty.all()
    np.testing.assert_array_equal(ts.pooled["generated"], ts.pooled["canvas"])
    other = DiffusionSampler(gen_length=8, steps=4).trace_batch(lm, PROMPTS[:1], [-1])
    t = 0  # 2 of 8 positions committed: a non-empty step averages those, not the whole canvas
    assert other.committed[0, t].sum() == 2 and not other.empty[0, t]
    assert not np.allclose(other.pooled["generated"][0, t], other.pooled["canvas"][0, t])
    assert not (ts.pooled["committed"] == 0).all()


# ------------------------------------------------------------------------------------------ batching, seeds
def test_batch_equals_one_by_one(lm, base):
    s = DiffusionSampler(gen_length=16, steps=5)
    for i, p in enumerate(PROMPTS):
        one = s.trace_batch(lm, [p], [-1, 1])
        assert (one.tokens[0] == base.tokens[i]).all() and one.texts[0] == base.texts[i]
        np.testing.assert_allclose(one.pooled["generated"][0], base.pooled["generated"][i], atol=1e-4)
    assert s.generate(lm, PROMPTS) == base.texts  # untraced loop, same result


def test_seeds_reproduce(lm):
    def run(seed):
        return DiffusionSampler(gen_length=12, steps=4, temperature=1.0, remasking="random",
                                seed=seed).trace_batch(lm, PROMPTS[:2], [-1])
    a, b, c = run(0), run(0), run(1)
    assert (a.tokens == b.tokens).all() and np.array_equal(a.pooled["generated"], b.pooled["generated"])
    assert (a.tokens != c.tokens).any()
    _check_invariants(a)


# ------------------------------------------------------------------------------------------ prefill, attacks
def test_prefill_respected(lm):
    s = DiffusionSampler(gen_length=16, steps=4, prefill={0: "Sure, here is", 10: "Step 1:"})
    ts = s.trace_batch(lm, PROMPTS[:2], [-1])
    _check_invariants(ts)
    sure = lm.tokenizer("Sure, here is", add_special_tokens=False)["input_ids"]
    step = lm.tokenizer("Step 1:", add_special_tokens=False)["input_ids"]
    for t in range(4):
        assert (ts.tokens[:, t, : len(sure)] == sure).all()
        assert (ts.tokens[:, t, 10:10 + len(step)] == step).all()
    assert all(s0[0].startswith("Sure, here is") for s0 in ts.step_texts)
    assert ts.committed[:, -1].all() and s.name == "low_confidence+prefill"
    n_pre = len(sure) + len(step)  # prefilled positions do not count towards the schedule
    k = num_transfer_tokens(torch.tensor([16 - n_pre]), 4)[0].tolist()
    assert (_new_per_step(ts) == [n_pre + k[0]] + k[1:]).all()


def test_canvas_attacks(lm):
    assert {"prefill_affirmative", "interleaved_template"} <= set(CANVAS_ATTACKS)
    pad = get_canvas_attack("prefill_affirmative")
    n = lambda text: len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    n_sure, n_step = n(AFFIRMATIVE), max(n("\n" + m) for m in STEP_MARKERS)
    long = n_sure + 4 * (n_step + MIN_CONTENT)  # room for all three markers
    s = pad.configure(DiffusionSampler(gen_length=long, steps=8), lm)
    gap = (long - n_sure) // 4
    assert s.prefill == ((0, AFFIRMATIVE), (n_sure + gap, "\nStep 1:"), (n_sure + 2 * gap, "\nStep 2:"),
                         (n_sure + 3 * gap, "\nStep 3:"))
    ts = s.trace_batch(lm, PROMPTS[:1], [-1])  # the sampler accepts it: nothing overlaps
    assert all(ts.committed[0, 0, p] for p, _ in s.prefill)
    assert (~ts.committed[0, 0, n_sure + gap - MIN_CONTENT:n_sure + gap]).all()  # room left before a marker
    # a shorter canvas gets fewer markers; one with no room after the prefix is refused with the fix
    assert len(pad.prefill(long - 1, lm.tokenizer)) == 3
    assert pad.prefill(n_sure + MIN_CONTENT, lm.tokenizer) == {0: AFFIRMATIVE}
    with pytest.raises(ValueError, match="raise gen_length"):
        pad.prefill(n_sure + MIN_CONTENT - 1, lm.tokenizer)
    with pytest.raises(ValueError, match="pass the model"):
        pad.prefill(32)
    assert pad.apply(["Tell me a joke"]) == ["Tell me a joke"]
    dija = get_canvas_attack("interleaved_template")
    s2 = dija.configure(DiffusionSampler(gen_length=48, steps=4), lm)
    ts = s2.trace_batch(lm, PROMPTS[:1], [-1])
    _check_invariants(ts)
    pre = {p for p, _ in s2.prefill}
    assert all(ts.committed[0, 0, p] for p in pre)
    # the template: text fragments at increasing positions separated by mask runs of the requested length
    pf = interleaved_prefill("A{mask:3}B{mask:2}C", lm.tokenizer, gen_length=16)
    nA = len(lm.tokenizer("A", add_special_tokens=False)["input_ids"])
    nB = len(lm.tokenizer("B", add_special_tokens=False)["input_ids"])
    assert pf == {0: "A", nA + 3: "B", nA + 3 + nB + 2: "C"}
    with pytest.raises(ValueError, match="only to diffusion"):
        pad.configure(ARSampler(steps=4), lm)
    with pytest.raises(ValueError, match="unknown canvas attack"):
        get_canvas_attack("nope")
    with pytest.raises(ValueError, match="gen_length"):
        interleaved_prefill("A{mask:30}B", lm.tokenizer, gen_length=16)
    assert isinstance(pad, CanvasAttack) and pad.description


# ------------------------------------------------------------------------------------------ errors, cache
def test_errors(lm, tiny_ar):
    with pytest.raises(ValueError, match="multiple of block_length"):
        DiffusionSampler(gen_length=16, steps=4, block_length=5)
    with pytest.raises(ValueError, match="split evenly over 4 blocks"):
        DiffusionSampler(gen_length=16, steps=6, block_length=4)
    with pytest.raises(ValueError, match="steps <= gen_length"):
        DiffusionSampler(gen_length=8, steps=16)
    with pytest.raises(ValueError, match="unknown remasking"):
        DiffusionSampler(remasking="best")
    with pytest.raises(ValueError, match="multiple of steps"):
        ARDiffusionSampler(gen_length=10, steps=4)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("nope")
    with pytest.raises(ValueError, match="block length 1"):
        make_sampler("dlm-ar", gen_length=8, steps=8, block_length=4)
    with pytest.raises(ValueError, match="outside the canvas"):
        DiffusionSampler(gen_length=8, steps=4, prefill={8: "x"})
    with pytest.raises(ValueError, match="overlaps"):
        DiffusionSampler(gen_length=16, steps=4, prefill={0: "Sure, here is", 1: "Step"}).trace_batch(
            lm, PROMPTS[:1], [-1])
    with pytest.raises(ValueError, match="overruns the canvas"):
        DiffusionSampler(gen_length=8, steps=4, prefill={6: "Sure, here is"}).trace_batch(lm, PROMPTS[:1], [-1])
    with pytest.raises(ValueError, match="at least one layer"):
        DiffusionSampler(gen_length=8, steps=4).trace_batch(lm, PROMPTS[:1], [])
    with pytest.raises(ValueError, match="needs a diffusion LM"):
        DiffusionSampler(gen_length=8, steps=4).trace_batch(tiny_ar, PROMPTS[:1], [-1])
    with pytest.raises(ValueError, match="needs a dlm model"):
        generate_traces(tiny_ar, PROMPTS[:1], DiffusionSampler(gen_length=8, steps=4), store=TraceStore("/nonexistent"),
                        progress=False)
    assert normalize_prefill({"3": "x"}, 8) == ((3, "x"),)


def test_generate_traces_round_trip(lm, tmp_path):
    s = make_sampler("low_confidence", gen_length=8, steps=4)
    store = TraceStore(tmp_path)
    ts = generate_traces(lm, PROMPTS, s, store=store, batch_size=2, progress=False)
    again = generate_traces(lm, PROMPTS, s, store=store, batch_size=2, progress=False)
    assert store.has(ts.meta["key"]) and len(store.keys()) == 1
    assert (again.tokens == ts.tokens).all() and again.pred_texts == ts.pred_texts
    assert np.array_equal(again.pooled["canvas"], ts.pooled["canvas"]) and again.meta["sampler_config"]["steps"] == 4
    other = generate_traces(lm, PROMPTS, make_sampler("dlm-ar", gen_length=8, steps=4), store=store, batch_size=2,
                            progress=False)
    assert other.meta["key"] != ts.meta["key"] and len(store.keys()) == 2
