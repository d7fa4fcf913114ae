"""The block-causal DLM (smollm2-135m-dlm's code path) on a seeded tiny Llama: attention pattern, logit shift,
the exact prompt cache in the diffusion samplers, the training noise, and the v3 registry entries."""
import numpy as np
import pytest
import torch

import srilib
from srilib.models import _blockcausal, mask_predict, prompt_cache
from srilib.organisms.smoldlm import SmolDiffusionLM, block_mask
from srilib.organisms.v3 import dlm_loss, dlm_noise
from srilib.samplers import make_sampler
from srilib.tiny import tiny_ar_model

PROMPTS = ["How do I learn Python?", "Write a short story about the sea", "Give me a recipe"]


@pytest.fixture(scope="module")
def lm():
    return srilib.load_model("tiny-dlm-blockcausal")


def _tiny(dtype=torch.float64):
    inner = tiny_ar_model(64, seed=1).to(dtype).eval()
    return inner, SmolDiffusionLM(inner, mask_id=5)


def _batch(P=7, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 64, (3, P + L), generator=g)
    ids[:, P:] = 5
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # left padding
    attn[1, :1] = 0
    return ids, attn


def test_block_mask_is_causal_in_the_prompt_and_full_in_the_block():
    attn = torch.tensor([[0, 1, 1, 1, 1, 1]])
    m = block_mask(attn, block_start=3)[0, 0]
    assert m.shape == (6, 6)
    assert not m[1, 2] and m[2, 1]  # prompt query: causal
    assert m[3, 5] and m[4, 5] and m[5, 3]  # block queries see the whole block ...
    assert m[3, 1] and not m[3, 0]  # ... and every real prompt token, never padding
    assert not m[1, 3]  # no prompt position sees the block
    assert m[0, 0] and not m[0, 1:3].any()  # a padding query sees itself (no fully masked row)
    tail = block_mask(attn, block_start=3, past=3)[0, 0]
    assert torch.equal(tail, m[3:])


def test_prompt_is_read_as_the_causal_lm_reads_it():
    inner, dlm = _tiny()
    ids, attn = _batch()
    P = 7
    states, _, _ = dlm.forward_states(ids, attn, P)
    ref = inner.model(input_ids=ids[:, :P - 1], attention_mask=attn[:, :P - 1],
                      position_ids=SmolDiffusionLM.positions(attn[:, :P - 1])).last_hidden_state
    real = attn[:, :P - 1].bool()
    assert torch.allclose(states[:, :P - 1][real], ref[real], atol=1e-10)


def test_first_canvas_position_sees_the_canvas_and_logits_are_shifted():
    _, dlm = _tiny()
    ids, attn = _batch()
    P = 7
    base, _ = dlm.predict(ids, attn, P)
    later = ids.clone()
    later[:, P + 4] = 11
    moved, _ = dlm.predict(later, attn, P)
    assert base.shape[1] == ids.shape[1] - P
    assert (moved[:, 0] - base[:, 0]).abs().max() > 1e-6  # position 0 is predicted inside the block
    states, _, _ = dlm.forward_states(ids, attn, P)
    head = dlm.lm.get_output_embeddings()
    assert torch.allclose(base[:, 0], head(states[:, P - 1]), atol=1e-10)  # canvas 0 from the last prompt token


def test_cache_and_sparse_logits_match_the_full_pass():
    _, dlm = _tiny()
    ids, attn = _batch()
    P = 7
    full, hid = _blockcausal(dlm, ids, attn, [-1, 1], P)
    cache = dlm.prompt_cache(ids, attn, P)
    for _ in range(2):  # the cache is left as it was after each use
        got, hgot = _blockcausal(dlm, ids, attn, [-1, 1], P, cache=cache)
        assert torch.allclose(got, full, atol=1e-10) and torch.allclose(hgot, hid, atol=1e-6)
    need = torch.zeros(3, ids.shape[1] - P, dtype=torch.bool)
    need[:, 2] = True
    sparse, _ = _blockcausal(dlm, ids, attn, [], P, cache=cache, need=need)
    assert torch.allclose(sparse[:, 2], full[:, 2], atol=1e-10) and not sparse[:, 0].any()


def test_a_stale_cache_is_refused():
    _, dlm = _tiny()
    ids, attn = _batch()
    cache = dlm.prompt_cache(ids, attn, 7)
    other = ids.clone()
    other[2, 4] = 7
    with pytest.raises(ValueError, match="prompt cache"):
        dlm.predict(other, attn, 7, cache=cache)


def test_other_families_get_no_cache():
    tiny = srilib.load_model("tiny-dlm")
    x = torch.tensor([[10, 11, 12, tiny.mask_id]])
    assert prompt_cache(tiny, x, None, 3) is None
    with pytest.raises(ValueError, match="no prompt cache"):
        mask_predict(tiny, x, None, [], start=3, cache=object())


@pytest.mark.parametrize("name,kw", [("low_confidence", {}), ("low_confidence", {"block_length": 4}),
                                     ("dlm-ar", {}), ("random", {}), ("low_confidence", {"temperature": 0.7}),
                                     ("low_confidence", {"capture": "decision"})])
def test_cached_decoding_commits_the_same_tokens_at_the_same_steps(lm, name, kw):
    traces = []
    for fast in (False, True):
        s = make_sampler(name, gen_length=16, steps=8, **kw)
        s.use_prompt_cache = s.sparse_logits = fast
        traces.append(s.trace_batch(lm, PROMPTS, [-1, 1]))
    plain, fast = traces
    assert np.array_equal(plain.tokens, fast.tokens)
    assert np.array_equal(plain.committed, fast.committed)
    assert np.array_equal(plain.predictions, fast.predictions)
    assert plain.step_texts == fast.step_texts
    for k in plain.pooled:
        np.testing.assert_allclose(plain.pooled[k], fast.pooled[k], atol=1e-5)


def test_generate_with_and_without_the_cache_agree(lm):
    s = make_sampler("dlm-ar", gen_length=16, steps=16)
    fast = s.generate(lm, PROMPTS)
    s.use_prompt_cache = s.sparse_logits = False
    assert s.generate(lm, PROMPTS) == fast


def test_diffuguard_runs_on_the_block_causal_family(lm):
    s = make_sampler("diffuguard", gen_length=16, steps=8)
    tr = s.trace_batch(lm, PROMPTS[:2], [-1])
    assert tr.tokens.shape == (2, 8, 16)


def test_suffix_noise_masks_a_suffix_and_t_is_its_share():
    cv = torch.arange(8 * 10).view(8, 10) + 10
    gen = torch.Generator().manual_seed(0)
    noisy, masked, t = dlm_noise(cv, 3, 1e-3, 1.0, gen)
    for row, tt in zip(masked, t):
        k = int(row.long().argmax()) if row.any() else 10
        assert row[k:].all() and not row[:k].any()
        assert abs(float(tt) - row.float().mean()) < 1e-6
    assert torch.equal(noisy == 3, masked)
    gen = torch.Generator().manual_seed(0)
    _, masked, t = dlm_noise(cv, 3, 1e-3, 0.0, gen)
    assert sorted((t * 8).floor().long().tolist()) == list(range(8))  # stratified over the batch


def test_dlm_loss_trains_the_mask_embedding():
    _, dlm = _tiny(torch.float32)
    dlm.train()
    ids, attn = _batch()
    cv = torch.randint(6, 64, (3, 6), generator=torch.Generator().manual_seed(2))
    loss = dlm_loss(dlm, ids[:, :7], attn[:, :7], 7, cv, 1e-3, 0.4, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and dlm.mask_embedding.grad.abs().sum() > 0


def test_v3_models_are_registered_without_loading():
    from srilib.models import REGISTRY, model_kind

    assert model_kind("smollm2-135m-dlm") == "dlm" and REGISTRY["smollm2-135m-dlm"].family == "blockcausal"
    assert model_kind("smollm2-135m-refusal-v3") == "ar"
