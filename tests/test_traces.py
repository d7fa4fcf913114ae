"""Trace store and AR tracer on a tiny random Llama (offline, seconds)."""
import numpy as np
import pytest
import torch

import srilib
from srilib.samplers import ARSampler
from srilib.models import left_pad
from srilib.traces import TraceSet, TraceStore, generate_traces, trace_key

# four prompts (not conftest's three): the batching and resume tests count two batches of two
PROMPTS = ["How do I make bread?", "Write a poem about the sea and the sky", "Hi", "List three fruits"]


def test_ar_trace_format(tiny_ar, tmp_path):
    ts = generate_traces(tiny_ar, PROMPTS, ARSampler(steps=6), store=TraceStore(tmp_path), batch_size=3,
                         layers=[-1, 1], progress=False)
    N, T = len(PROMPTS), 6
    assert ts.tokens.shape == (N, T, T) and ts.committed.shape == (N, T, T)
    assert ts.pooled["generated"].shape == (N, T, 2, tiny_ar.model.config.hidden_size)
    assert set(ts.poolings) == {"generated", "producer", "producer_all"}
    assert ts.phi().shape == (N, T, tiny_ar.model.config.hidden_size)
    # AR: exactly one more position committed per step until EOS, and committed tokens never change
    for t in range(1, T):
        assert (ts.committed[:, t - 1] <= ts.committed[:, t]).all()
        same = ts.committed[:, t - 1]
        assert (ts.tokens[:, t][same] == ts.tokens[:, t - 1][same]).all()
    assert ts.meta["key"] and ts.meta["model"] == "tiny-ar"
    assert len(ts.step_texts[0]) == T and ts.texts[0] == ts.step_texts[0][-1]


def test_tracing_matches_plain_generate(tiny_ar):
    """The traced tokens are exactly what Hugging Face greedy generate produces (batched, left-padded)."""
    ids = tiny_ar.encode(PROMPTS)
    x, a = left_pad(ids, tiny_ar.pad_id, "cpu")
    with torch.no_grad():
        g = tiny_ar.model.generate(input_ids=x, attention_mask=a, max_new_tokens=6, do_sample=False,
                              pad_token_id=tiny_ar.pad_id, eos_token_id=tiny_ar.eos_ids)
    ts = ARSampler(steps=6).trace_batch(tiny_ar, PROMPTS, [-1])
    for b in range(len(PROMPTS)):
        ours = [int(t) for t in ts.tokens[b, -1] if t >= 0]
        theirs = g[b, x.shape[1]:].tolist()[: len(ours)]
        assert ours == theirs


def test_pooling_definitions(tiny_ar):
    """'generated' = mean of each token's own last-layer state; 'producer' = state one position earlier."""
    p = ["Write a poem about the sea and the sky"]
    ts = ARSampler(steps=4).trace_batch(tiny_ar, p, [-1])
    ids = tiny_ar.encode(p)[0] + [int(t) for t in ts.tokens[0, -1] if t >= 0]
    with torch.no_grad():
        hs = tiny_ar.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].numpy()
    P = len(tiny_ar.encode(p)[0])
    for t in range(4):
        np.testing.assert_allclose(ts.pooled["generated"][0, t, 0], hs[P:P + t + 1].mean(0), atol=1e-4)
        np.testing.assert_allclose(ts.pooled["producer"][0, t, 0], hs[P - 1:P + t].mean(0), atol=1e-4)


def test_selected_layers_match_all_hidden_states(tiny_ar):
    """Only the requested layers are asked of the model (transformers selects them by index); each equals the
    same entry of the full hidden_states tuple (0 = embeddings, 1 = block 1, -1 = after the final norm)."""
    p = ["Write a poem about the sea and the sky"]
    ts = ARSampler(steps=3).trace_batch(tiny_ar, p, [0, 1, -1])
    ids = tiny_ar.encode(p)[0] + [int(t) for t in ts.tokens[0, -1] if t >= 0]
    with torch.no_grad():
        hs = tiny_ar.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    P = len(tiny_ar.encode(p)[0])
    for j, k in enumerate([0, 1, -1]):
        h = hs[k][0].numpy()
        np.testing.assert_allclose(ts.pooled["generated"][0, -1, j], h[P:P + 3].mean(0), atol=1e-4)


def test_batching_does_not_change_results(tiny_ar):
    a = ARSampler(steps=5).trace_batch(tiny_ar, PROMPTS, [-1])
    for i, p in enumerate(PROMPTS):
        b = ARSampler(steps=5).trace_batch(tiny_ar, [p], [-1])
        np.testing.assert_array_equal(a.tokens[i], b.tokens[0])
        np.testing.assert_allclose(a.pooled["generated"][i], b.pooled["generated"][0], atol=1e-4)


def test_batches_group_prompts_by_length(tiny_ar, tmp_path, monkeypatch):
    """Batches hold prompts of similar token length (less padding); results come back in the given order."""
    prompts = ["Write a poem about the sea and the sky", "Hi", "Explain in detail how tides and moons work", "Yo",
               "List three fruits"]
    n = {p: len(tiny_ar.encode([p])[0]) for p in prompts}
    assert n["Hi"] == n["Yo"]  # a tie: kept in the given order
    seen = []
    orig = ARSampler.trace_batch
    monkeypatch.setattr(ARSampler, "trace_batch", lambda self, lm_, ps, ls: seen.append(ps) or orig(self, lm_, ps, ls))
    ts = generate_traces(tiny_ar, prompts, ARSampler(steps=4), store=TraceStore(tmp_path), batch_size=2, progress=False)
    by_length = sorted(prompts, key=n.get)
    assert seen == [by_length[0:2], by_length[2:4], by_length[4:]]
    assert ts.prompts == prompts
    for i, p in enumerate(prompts):
        one = orig(ARSampler(steps=4), tiny_ar, [p], [-1])
        np.testing.assert_array_equal(ts.tokens[i], one.tokens[0])
        assert ts.step_texts[i] == one.step_texts[0]
        np.testing.assert_allclose(ts.phi()[i], one.phi()[0], atol=1e-4)


def test_sampling_is_seeded(tiny_ar):
    s1 = ARSampler(steps=6, temperature=1.0, seed=3).trace_batch(tiny_ar, PROMPTS, [-1])
    s2 = ARSampler(steps=6, temperature=1.0, seed=3).trace_batch(tiny_ar, PROMPTS, [-1])
    np.testing.assert_array_equal(s1.tokens, s2.tokens)


def test_cache_hit_miss_and_resume(tiny_ar, tmp_path, monkeypatch):
    store = TraceStore(tmp_path)
    s = ARSampler(steps=4)
    first = generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=2, progress=False)
    calls = []
    orig = ARSampler.trace_batch
    monkeypatch.setattr(ARSampler, "trace_batch", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    again = generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=2, progress=False)
    assert calls == [] and again.meta["key"] == first.meta["key"]
    # any changed input is a different key: steps, prompts, model weights, layers, batch size
    generate_traces(tiny_ar, PROMPTS, ARSampler(steps=5), store=store, batch_size=2, progress=False)
    generate_traces(tiny_ar, PROMPTS[:3], s, store=store, batch_size=2, progress=False)
    other = srilib.load_model("tiny-ar", seed=1)
    assert other.fingerprint != tiny_ar.fingerprint
    assert len(calls) == 2 + 2
    k = lambda **kw: trace_key(tiny_ar.fingerprint, PROMPTS, s.config(), **{"layers": [-1], "batch_size": 2,  # noqa
                                                                      "dtype": "float32", **kw})
    assert len({k(), k(layers=[-1, 1]), k(batch_size=4), k(dtype="bfloat16")}) == 4


def test_interrupted_run_resumes(tiny_ar, tmp_path, monkeypatch):
    store = TraceStore(tmp_path)
    s = ARSampler(steps=4)
    orig = ARSampler.trace_batch
    calls = []

    def flaky(self, lm_, prompts, layers):
        calls.append(prompts)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return orig(self, lm_, prompts, layers)

    monkeypatch.setattr(ARSampler, "trace_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=2, progress=False)
    calls.clear()
    ts = generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=2, progress=False)
    by_length = sorted(PROMPTS, key=lambda x: len(tiny_ar.encode([x])[0]))
    assert calls == [by_length[2:]]  # the finished batch was kept, only the lost one is recomputed
    assert len(ts) == 4 and not list((store.dir / ts.meta["key"] / "parts").glob("*.npz"))


def test_sharded_generation_merges(tiny_ar, tmp_path):
    store = TraceStore(tmp_path)
    s = ARSampler(steps=3)
    assert generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=1, shard=(0, 2), progress=False) is None
    assert generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=1, shard=(1, 2), progress=False) is None
    assert not store.has(trace_key(tiny_ar.fingerprint, PROMPTS, s.config(), layers=[-1], batch_size=1,
                                   dtype=tiny_ar.dtype_name))  # shards never merge
    calls = []
    orig = ARSampler.trace_batch
    ARSampler.trace_batch = lambda self, *a, **k: calls.append(1) or orig(self, *a, **k)
    try:
        done = generate_traces(tiny_ar, PROMPTS, s, store=store, batch_size=1, progress=False)
    finally:
        ARSampler.trace_batch = orig
    assert calls == [] and done.prompts == PROMPTS  # the merge reused every shard's batches


def test_roundtrip_and_subset(tiny_ar, tmp_path):
    ts = ARSampler(steps=3).trace_batch(tiny_ar, PROMPTS, [-1])
    p = tmp_path / "t.npz"
    p.write_bytes(ts.to_bytes())
    back = TraceSet.from_file(p)
    np.testing.assert_array_equal(back.tokens, ts.tokens)
    assert back.step_texts == ts.step_texts
    sub = ts.subset([2, 0])
    assert sub.prompts == [PROMPTS[2], PROMPTS[0]]
    both = TraceSet.concat([sub, sub])
    assert len(both) == 4


def test_bad_input(tiny_ar, tmp_path):
    store = TraceStore(tmp_path)
    with pytest.raises(ValueError, match="empty prompt list"):
        generate_traces(tiny_ar, [], ARSampler(steps=2), store=store)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_traces(tiny_ar, ["ok", "  "], ARSampler(steps=2), store=store)
    with pytest.raises(ValueError, match="special token"):
        generate_traces(tiny_ar, ["hi <|im_end|> there"], ARSampler(steps=2), store=store)
    with pytest.raises(ValueError, match="shorten the prompt"):
        generate_traces(tiny_ar, ["word " * 2000], ARSampler(steps=2), store=store)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ARSampler(steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_traces(tiny_ar, ["ok"], ARSampler(steps=2), store=store, batch_size=0)
    with pytest.raises(KeyError, match="not recorded"):
        ARSampler(steps=2).trace_batch(tiny_ar, ["ok"], [-1]).phi(layer=1)


def test_sampling_on_transformers_warpers_draws_what_the_nucleus_formula_draws():
    """pick_next warps with transformers' temperature and top-p warpers; on seeded logits it draws the same tokens
    as nucleus sampling written out (softmax, keep the top tokens until their mass passes top_p, renormalise)."""
    from srilib.samplers.ar import pick_next

    def nucleus(logits, temperature, top_p, generator):
        probs = torch.softmax(logits / temperature, dim=-1)
        sp, si = probs.sort(dim=-1, descending=True)
        sp[sp.cumsum(-1) - sp > top_p] = 0
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)

    torch.manual_seed(0)
    for temperature, top_p in [(1.0, 0.9), (0.7, 1.0), (0.5, 0.95)]:
        for seed in range(20):
            logits = torch.randn(8, 500) * 3
            draw = pick_next(logits, temperature, top_p, torch.Generator().manual_seed(seed))
            assert torch.equal(draw, nucleus(logits, temperature, top_p, torch.Generator().manual_seed(seed)))
    assert torch.equal(pick_next(logits, 0.0, 0.9, None), logits.argmax(-1))
