"""DiffusionGemma and its AR twin on tiny random configurations of the real transformers classes (offline).

The traced sampler is checked against ``model.generate()`` step by step (its streamed drafts, its appended
canvases), ``dlm-ar`` against a greedy loop over the encoder's next-token logits, and the SRI pipeline (anchors,
signal, zones, IRR) runs on the traces.
"""
import copy

import numpy as np
import pytest
import torch
from conftest import PROMPTS

from srilib.models import REGISTRY, list_models, load_model, model_kind
from srilib.samplers import ARSampler, make_sampler
from srilib.models import left_pad
from srilib.samplers.block_diffusion import BlockDiffusionSampler, grid_slots
from srilib.samplers.diffusion import ARDiffusionSampler
from srilib.samplers.encoder_ar import EncoderLM
from srilib.traces import TraceStore, generate_traces, trace_key

STOPS = {"confidence_threshold": 0.8, "stability_threshold": 0}  # tiny model: rows stop early at different steps


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-diffusiongemma")


class Recorder:
    """A streamer with ``put_draft``: generate() sends it the prompt, every step's argmax draft, and every canvas it
    appends (after end-of-text padding)."""

    def __init__(self):
        self.events = []

    def put(self, value):
        self.events.append(("put", value.clone()))

    def put_draft(self, value):
        self.events.append(("draft", value.clone()))

    def end(self):
        pass

    def canvases(self):
        """[(drafts [n, B, Lc], appended canvas [B, Lc]), ...] per canvas."""
        out, drafts = [], []
        for kind, v in self.events[1:]:  # the first put is the prompt
            if kind == "draft":
                drafts.append(v)
            else:
                out.append((torch.stack(drafts).numpy(), v.numpy()))
                drafts = []
        return out


def _generate(lm, prompts, sampler, streamer=None):
    """transformers' generate() on the same left-padded batch, seed and settings, with a draft recorder; also
    returns what its sampler accepted at each step (accepted mask, accepted canvas), in order."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSampler

    x, attn = left_pad(lm.validate_prompts(prompts), lm.pad_id, lm.device)
    rec, accepted = streamer or Recorder(), []
    accept = EntropyBoundSampler.accept_canvas

    def spy(self, *a, **kw):
        out = accept(self, *a, **kw)
        accepted.append((self.accepted_token_mask.clone().numpy(), out.clone().numpy()))
        return out

    torch.manual_seed(sampler.seed)
    EntropyBoundSampler.accept_canvas = spy
    try:
        out = lm.model.generate(x, attention_mask=attn, streamer=rec, **sampler.generation_kwargs())
    finally:
        EntropyBoundSampler.accept_canvas = accept
    if streamer is not None:
        return out.sequences[:, x.shape[1]:].numpy(), accepted
    return out.sequences[:, x.shape[1]:].numpy(), rec.canvases(), accepted


def _check_against_generate(lm, ts, gen, canvases, accepted):
    S, Lc = ts.meta["denoising_steps"], ts.meta["canvas_length"]
    accepted = iter(accepted)
    assert ts.meta["grid_slots"] == list(range(ts.T)) and ts.T == ts.meta["canvases"] * S
    # the last step holds exactly what generate() returned (canvases it never ran: -1, uncommitted)
    assert (ts.tokens[:, -1, :gen.shape[1]] == gen).all() and (ts.tokens[:, -1, gen.shape[1]:] == -1).all()
    assert ((ts.tokens >= 0) == ts.committed).all()
    n_final = 0
    for c, (drafts, appended) in enumerate(canvases):
        lo, hi = c * Lc, (c + 1) * Lc
        for k in range(S):
            t = c * S + k
            draft = drafts[min(k, len(drafts) - 1)]
            mask, canvas = next(accepted) if k < len(drafts) else (None, None)
            final = ts.committed[:, t, lo:hi].all(1)
            for b in range(len(ts)):
                if final[b]:  # the draft no longer changes from here on, and it is what generate() appended
                    assert all((d[b] == draft[b]).all() for d in drafts[k:])
                    assert (ts.predictions[b, t, lo:hi] == appended[b]).all()
                    assert (ts.tokens[b, t, lo:hi] == appended[b]).all()
                    n_final += 1
                else:  # the step's streamed draft; committed = what generate()'s sampler accepted, its samples
                    assert (ts.predictions[b, t, lo:hi] == draft[b]).all()
                    assert (ts.committed[b, t, lo:hi] == mask[b]).all() and 1 <= mask[b].sum() < Lc
                    assert (ts.tokens[b, t, lo:hi][mask[b]] == canvas[b][mask[b]]).all()
            if c:  # finished canvases: committed as appended
                assert (ts.tokens[:, t, :lo] == np.concatenate([a for _, a in canvases[:c]], 1)).all()
            assert (ts.tokens[:, t, hi:] == -1).all() and (ts.predictions[:, t, hi:] == -1).all()
    return n_final


# ------------------------------------------------------------------------------------------ generate() parity
@pytest.mark.parametrize("settings,seed", [({}, 3), (STOPS, 0)], ids=["no-stop", "adaptive-stop"])
def test_trace_equals_generate_step_by_step(lm, settings, seed):
    sampler = make_sampler("entropy_bound", gen_length=16, seed=seed, **settings)
    ts = sampler.trace_batch(lm, PROMPTS, [-1, 1])
    gen, canvases, accepted = _generate(lm, PROMPTS, sampler)
    assert len(canvases) == 2 and ts.tokens.shape == (3, 12, 16)
    n_final = _check_against_generate(lm, ts, gen, canvases, accepted)
    if settings:  # every row stopped at the first step of canvas 1; in canvas 2 one row ran on after the others
        assert len(canvases[0][0]) == 1 and len(canvases[1][0]) == 4
        assert [int(ts.committed[b, 6:12, 8:].all(1).argmax()) for b in range(3)] == [0, 3, 0]
    else:
        assert n_final == 2 * 3 and all(len(d) == 6 for d, _ in canvases)
    assert sampler.generate(lm, PROMPTS) == ts.texts
    # the trace leaves the caller's random state alone
    torch.manual_seed(11)
    a = torch.rand(1)
    torch.manual_seed(11)
    sampler.trace_batch(lm, PROMPTS[:1], [-1])
    assert torch.equal(torch.rand(1), a)


def test_trace_equals_generate_with_end_of_text(lm):
    """A draft token made end-of-text: generate() pads after it, the sequence ends and no second canvas runs."""
    sampler = make_sampler("entropy_bound", gen_length=16, seed=1)
    first = sampler.trace_batch(lm, PROMPTS[:1], [-1])
    end = int(first.tokens[0, 5, 2])  # the finalized first canvas's third token
    m = copy.copy(lm)
    m.model = copy.deepcopy(lm.model)
    m.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id, end]
    ts = sampler.trace_batch(m, PROMPTS[:1], [-1])
    gen, canvases, accepted = _generate(m, PROMPTS[:1], sampler)
    assert gen.shape == (1, 8) and len(canvases) == 1  # generate() stopped after the first canvas
    assert (gen[0, 3:] == m.pad_id).all()
    _check_against_generate(m, ts, gen, canvases, accepted)
    assert (ts.tokens[0, 6:] == ts.tokens[0, 5]).all()  # the unrun canvas repeats the last state
    assert ts.texts[0] == m.tokenizer.decode(gen[0, :2].tolist(), skip_special_tokens=True)


# ------------------------------------------------------------------------------------------ poolings, T, capture
def test_poolings_steps_and_capture(lm):
    full = make_sampler("entropy_bound", gen_length=16, seed=2).trace_batch(lm, PROMPTS, [-1, 1])
    assert set(full.poolings) == {"generated", "committed", "canvas"}
    assert all(v.shape == (3, 12, 2, 64) and np.isfinite(v).all() for v in full.pooled.values())
    assert not full.empty.any()  # at least one position is accepted at every step
    last = full.pooled
    assert np.allclose(last["committed"][:, -1], last["canvas"][:, -1], atol=1e-6)  # all committed at the end
    assert not np.allclose(last["generated"][:, 2], last["canvas"][:, 2])  # noise is not "generated"
    # steps=T: T slots of the same grid, the last one included
    assert grid_slots(12, 4) == [2, 5, 8, 11] and grid_slots(12, None) == list(range(12))
    four = make_sampler("entropy_bound", gen_length=16, seed=2, steps=4).trace_batch(lm, PROMPTS, [-1, 1])
    assert four.T == 4 and four.meta["grid_slots"] == [2, 5, 8, 11]
    assert (four.tokens == full.tokens[:, [2, 5, 8, 11]]).all() and four.texts == full.texts
    assert np.allclose(four.pooled["generated"], full.pooled["generated"][:, [2, 5, 8, 11]])
    with pytest.raises(ValueError, match="do not fit the grid"):
        make_sampler("entropy_bound", gen_length=16, steps=13).trace_batch(lm, PROMPTS[:1], [-1])
    # capture="decision": generate()'s passes only; the same tokens, nothing committed in the first pass's input
    dec = make_sampler("entropy_bound", gen_length=16, seed=2, capture="decision").trace_batch(lm, PROMPTS, [-1, 1])
    assert (dec.tokens == full.tokens).all() and dec.empty[:, 0].all() and not dec.empty[:, 1:].any()
    # ... and in the first canvas the pass that decides step k + 1 is the one that first sees step k: the same
    # pooled vectors (later canvases differ: a finished canvas is read from its final "after" / "decision" pass)
    k = np.arange(5)
    for name in full.poolings:
        assert np.allclose(dec.pooled[name][:, k + 1], full.pooled[name][:, k], atol=1e-6)
        assert not np.allclose(dec.pooled[name][:, 7:], full.pooled[name][:, 6:-1], atol=1e-3)
    assert not np.allclose(dec.pooled["generated"][:, 5], full.pooled["generated"][:, 5], atol=1e-3)


class LogitsRecorder(Recorder):
    """generate() hands a streamer with ``_takes_logits`` the self-conditioning logits of each step."""

    _takes_logits = True

    def put_draft(self, logits):
        self.events.append(("draft", logits.clone()))


def test_final_pooling_reads_the_finalized_canvases(lm):
    """Recomputed by hand for one prompt: the last step's ``canvas`` pooling (capture="after") is the mean hidden
    state of a decoder pass over each finalized canvas, with its last self-conditioning logits, after the encoder
    has cached the prompt and the canvases before it."""
    from transformers import DynamicCache

    sampler = make_sampler("entropy_bound", gen_length=16, seed=4)
    ts = sampler.trace_batch(lm, PROMPTS[2:], [-1, 1])
    logits = LogitsRecorder()
    gen, _ = _generate(lm, PROMPTS[2:], sampler, streamer=logits)
    final_logits = [drafts[-1] for drafts, _ in logits.canvases()]
    model, ids = lm.model, torch.tensor(lm.encode(PROMPTS[2:]))
    P, cache, states = ids.shape[1], DynamicCache(config=model.config.get_text_config()), []
    with torch.no_grad():
        model.model.encoder(input_ids=ids, cache=cache)
        for c in range(2):
            canvas = torch.tensor(gen[:, c * 8:(c + 1) * 8])
            pos = torch.arange(P + 8 * c, P + 8 * (c + 1))[None]
            out = model(decoder_input_ids=canvas, self_conditioning_logits=torch.as_tensor(final_logits[c]),
                        cache=cache, decoder_position_ids=pos, output_hidden_states=True)
            states.append(torch.stack([out.hidden_states[1], out.hidden_states[-1]], 2))
            model.model.encoder(input_ids=canvas, cache=cache, position_ids=pos)
    want = torch.cat(states, 1).mean(1).numpy()
    assert np.allclose(ts.pooled["canvas"][:, -1][:, [1, 0]], want, atol=1e-5)


def test_config_changes_cache_key(lm, tmp_path):
    a, b = make_sampler("entropy_bound", gen_length=16), make_sampler("entropy_bound", gen_length=16, seed=1)
    c = make_sampler("entropy_bound", gen_length=16, entropy_bound=0.5)
    keys = {trace_key(lm.fingerprint, PROMPTS, s.config(), layers=[-1], batch_size=2, dtype="float32")
            for s in (a, b, c, BlockDiffusionSampler(gen_length=16, max_denoising_steps=3))}
    assert len(keys) == 4 and a.config() == BlockDiffusionSampler(gen_length=16).config()
    store = TraceStore(tmp_path)
    ts = generate_traces(lm, PROMPTS[:2], a, store=store, batch_size=2, progress=False)
    again = generate_traces(lm, PROMPTS[:2], a, store=store, batch_size=2, progress=False)
    other = generate_traces(lm, PROMPTS[:2], b, store=store, batch_size=2, progress=False)
    assert len(store.keys()) == 2 and again.meta["key"] == ts.meta["key"] != other.meta["key"]
    assert ts.meta["sampler_config"]["sampler"] == "entropy_bound" and ts.meta["model_kind"] == "dlm"


def test_experiment_settings_and_errors(lm):
    """An experiment's common settings build the sampler; what does not apply is refused by name."""
    s = make_sampler("entropy_bound", gen_length=16, steps=4, temperature=0.0, seed=0, capture="after",
                     block_length=16)
    assert isinstance(s, BlockDiffusionSampler) and s.steps == 4
    with pytest.raises(ValueError, match="canvas"):
        make_sampler("entropy_bound", gen_length=16, block_length=8)
    with pytest.raises(ValueError, match="temperature schedule"):
        make_sampler("entropy_bound", gen_length=16, temperature=0.7)
    with pytest.raises(ValueError, match="not a DiffusionGemma"):
        s.trace_batch(load_model("tiny-dlm"), PROMPTS[:1], [-1])
    with pytest.raises(ValueError, match="mask_id"):  # the masked-diffusion samplers need a mask token
        make_sampler("low_confidence", gen_length=16, steps=4).trace_batch(lm, PROMPTS[:1], [-1])
    assert lm.max_context == lm.model.config.get_text_config().max_position_embeddings == 1024


# ------------------------------------------------------------------------------------------ dlm-ar
def _greedy_encoder(lm, prompt: str, n: int) -> list[int]:
    """Reference: n greedy tokens from the encoder's next-token logits, recomputed from scratch (no cache)."""
    ids = lm.encode([prompt])[0]
    enc_lm, out = EncoderLM(lm.model), []
    for _ in range(n):
        logits = enc_lm(torch.tensor([ids + out])).logits[0, -1]
        out.append(int(logits.argmax()))
        if out[-1] in lm.eos_ids:
            break
    return out


def test_dlm_ar_decodes_with_the_encoder(lm):
    s = make_sampler("dlm-ar", gen_length=8, steps=4)
    assert isinstance(s, ARDiffusionSampler) and s.config() == ARDiffusionSampler(gen_length=8, steps=4).config()
    ts = s.trace_batch(lm, PROMPTS, [-1, 1])
    again = s.trace_batch(lm, PROMPTS, [-1, 1])
    assert (ts.tokens == again.tokens).all() and np.array_equal(ts.pooled["generated"], again.pooled["generated"])
    assert ts.tokens.shape == (3, 4, 8) and ts.meta["sampler"] == "dlm-ar"
    assert set(ts.poolings) == {"generated", "producer", "producer_all"}
    for i, p in enumerate(PROMPTS):  # left padding in the batch changes nothing
        ref = _greedy_encoder(lm, p, 8)
        row = ts.tokens[i, -1]
        assert row[: len(ref)].tolist() == ref and (row[len(ref):] == -1).all()
        for t in range(4):  # every second token is a traced step
            assert ts.committed[i, t, : 2 * (t + 1)].sum() == min(2 * (t + 1), len(ref))
    assert s.generate(lm, PROMPTS) == ts.texts
    with pytest.raises(ValueError, match="no canvas to prefill"):
        make_sampler("dlm-ar", gen_length=8, steps=4, prefill={0: "Sure"}).trace_batch(lm, PROMPTS[:1], [-1])


def test_dlm_ar_unchanged_for_masked_dlms():
    tiny = load_model("tiny-dlm")
    a = make_sampler("dlm-ar", gen_length=8, steps=4).trace_batch(tiny, PROMPTS, [-1])
    b = ARDiffusionSampler(gen_length=8, steps=4).trace_batch(tiny, PROMPTS, [-1])
    assert (a.tokens == b.tokens).all() and np.array_equal(a.pooled["canvas"], b.pooled["canvas"])


# ------------------------------------------------------------------------------------------ the SRI pipeline
def test_anchors_signal_zones_irr_on_traces(tmp_path):
    from srilib.experiment import Experiment, PromptSets
    from srilib.signal import internal_recovery_rate
    from srilib.signal import zone

    exp = Experiment(steps=4, gen_length=16, batch_size=4, cache=str(tmp_path), progress=False)
    sets = PromptSets.build(n_anchor=3, n_eval=2)
    for run in ("tiny-diffusiongemma@entropy_bound", "tiny-diffusiongemma@dlm-ar"):
        anchors = exp.anchors(run, sets)  # the random model refuses nothing: the recorded unfiltered fallback
        assert anchors.T == 4 and anchors.fallback and np.isfinite(anchors.mu_harmless).all()
        ev = exp.traces(run, sets.eval_harmful, "eval")
        sigma = anchors.signal(ev)
        assert sigma.shape == (2, 4) and ((sigma > 0) & (sigma < 1)).all()
        assert zone(sigma).shape == (2, 4)
        assert set(internal_recovery_rate(sigma)) and exp.resolve(run).kind == "dlm"


# ------------------------------------------------------------------------------------------ the registry
def test_registry_real_models_load_natively(monkeypatch):
    """Both real names are registered (no remote code); their loaders call the native classes, checked here with
    the Hub replaced by the tiny models."""
    import transformers

    from srilib.diffusion_gemma import tiny_diffusion_gemma, tiny_gemma4
    from srilib.tiny import tiny_tokenizer

    dg, g4 = REGISTRY["diffusiongemma-26b-a4b-it"], REGISTRY["gemma-4-26b-a4b-it"]
    assert (dg.hf_id, dg.kind, dg.trust_remote_code) == ("google/diffusiongemma-26B-A4B-it", "dlm", False)
    assert (g4.hf_id, g4.kind, g4.trust_remote_code) == ("google/gemma-4-26B-A4B-it", "ar", False)
    assert model_kind("diffusiongemma-26b-a4b-it") == "dlm" and "tiny-gemma4" in list_models()
    calls = []

    def fake(build):
        def from_pretrained(src, **kw):
            calls.append((src, kw))
            return build(tiny_tokenizer()) if build else tiny_tokenizer()
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake(None))
    monkeypatch.setattr(transformers.DiffusionGemmaForBlockDiffusion, "from_pretrained", fake(tiny_diffusion_gemma))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake(tiny_gemma4))
    a = load_model("diffusiongemma-26b-a4b-it", dtype="float32", device="cpu")
    b = load_model("gemma-4-26b-a4b-it", dtype="float32", device="cpu")
    assert {src for src, _ in calls} == {dg.hf_id, g4.hf_id}
    assert all(not kw.get("trust_remote_code") for _, kw in calls)
    assert (a.kind, a.family, a.mask_id) == ("dlm", "diffusion_gemma", None)
    assert type(a.model).__name__ == "DiffusionGemmaForBlockDiffusion"
    assert (b.kind, type(b.model).__name__) == ("ar", "Gemma4ForCausalLM")
    assert a.fingerprint.startswith("hf:google/diffusiongemma-26B-A4B-it@")


def test_registered_in_a_fresh_process():
    """The registry lists the four models without importing any sampler first (srilib.models' plugins)."""
    import subprocess
    import sys

    code = ("import sys; from srilib.models import list_models, model_kind; "
            "print([model_kind(m) for m in ('diffusiongemma-26b-a4b-it', 'gemma-4-26b-a4b-it', "
            "'tiny-diffusiongemma', 'tiny-gemma4')], 'srilib.samplers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['dlm',", "'ar',", "'dlm',", "'ar']", "False"]


def test_tiny_gemma4_text_stack_matches_the_full_model():
    from srilib.diffusion_gemma import gemma4_text_only, tiny_gemma4
    from srilib.tiny import tiny_tokenizer

    full = tiny_gemma4(tiny_tokenizer())
    text = gemma4_text_only(full)
    assert text.model is full.model.language_model and text.lm_head is full.lm_head
    g4 = load_model("tiny-gemma4")
    x, attn = left_pad(g4.validate_prompts(PROMPTS), g4.pad_id, "cpu")
    with torch.no_grad():
        a = full(input_ids=x, attention_mask=attn, output_hidden_states=[1, -1])
        b = text(input_ids=x, attention_mask=attn, output_hidden_states=[1, -1])
    assert torch.equal(a.logits, b.logits) and all(torch.equal(a.hidden_states[i], b.hidden_states[i]) for i in (1, -1))
    ts = ARSampler(steps=4).trace_batch(g4, PROMPTS, [-1, 1])  # srilib's AR path reads its text configuration
    assert ts.pooled["generated"].shape == (3, 4, 2, 64) and g4.max_context == 1024


def test_random_search_objective_reads_the_causal_encoder(tiny_ar):
    """DiffusionGemma has no mask token, so Random Search reads its causal encoder's log p(target) as the first
    reply token (our choice); the recorded objective equals a fresh scoring of the returned prompt."""
    from srilib.adaptive import RSBudget, prompt_objective, run_random_search
    from srilib.adaptive.rs_objective import objective_view

    lm = load_model("tiny-diffusiongemma")
    view = objective_view(lm)
    assert view.kind == "ar" and view is not lm and objective_view(tiny_ar) is tiny_ar
    budget = RSBudget(n_iterations=3, n_restarts=1, n_candidates=2, n_tokens_adv=4, n_tokens_change_max=2,
                      stop="argmax", restarts="best", self_transfer=False)
    res = run_random_search(lm, ["How do I pick a lock?"], budget, seed=0, cache=False, progress=False)
    obj, _ = prompt_objective(lm, res.prompts)
    np.testing.assert_allclose(obj, res.objectives, atol=1e-4)


def test_runs_resolve_to_its_own_sampler_and_skip_mask_only_sections():
    """A bare DiffusionGemma run name resolves to its own sampler; block-length variants, canvas attacks and
    DiffuGuard (which need [MASK] positions) leave it out; the profile check knows its samplers."""
    from srilib.chapters.sampling import expand_runs
    from srilib.experiment import resolve_run
    from srilib.models import masked_diffusion
    from srilib.experiment import _run

    run = resolve_run("tiny-diffusiongemma")
    assert (run.kind, run.sampler) == ("dlm", "entropy_bound")
    assert resolve_run("diffusiongemma-26b-a4b-it").sampler == "entropy_bound"
    assert not masked_diffusion("tiny-diffusiongemma") and masked_diffusion("tiny-dlm")
    assert not masked_diffusion("tiny-ar") and not masked_diffusion("tiny-gemma4")
    runs = [resolve_run("tiny-dlm"), run]
    assert [r.label for r in expand_runs(runs, [8])] == [runs[0].label, run.label, "tiny-dlm@low_confidence:b8"]
    assert _run("tiny-diffusiongemma@dlm-ar") is None and _run("tiny-diffusiongemma@low_confidence")
