"""DLM adapters and loaders (srilib.models) on the tiny ModernBERT masked LM and its LLaDA/Dream doubles (offline)."""
import pytest
import torch

import srilib
from srilib.models import _load_dlm_hf, ignores_padding, mask_predict
from srilib.tiny import TinyLLaDA
from srilib.models import REGISTRY, ModelLoadError, ModelSpec
from srilib.models import left_pad

# two prompts (not conftest's three), the second the shorter: the padding tests read it alone, unpadded
PROMPTS = ["How do I make bread?", "Hi"]
L = 6
FAMILIES = {"bidirectional": "tiny-dlm", "llada": "tiny-dlm-llada", "dream": "tiny-dlm-dream"}


@pytest.fixture(scope="module")
def models():
    return {fam: srilib.load_model(name) for fam, name in FAMILIES.items()}


def _batch(lm, prompts=PROMPTS):
    """Left-padded prompts followed by a canvas of L positions (first two committed, the rest masked)."""
    x, a = left_pad(lm.encode(prompts), lm.pad_id, "cpu")
    canvas = torch.full((len(prompts), L), lm.mask_id)
    canvas[:, :2] = torch.tensor([40, 41])
    return torch.cat([x, canvas], 1), torch.cat([a, torch.ones_like(canvas)], 1), x.shape[1]


def test_loaders(models):
    tok = models["bidirectional"].tokenizer
    for fam, lm in models.items():
        assert lm.kind == "dlm" and lm.family == fam and lm.mask_id == tok.mask_token_id
    fps = {lm.fingerprint for lm in models.values()}
    assert len(fps) == 3  # one cache key per family
    assert srilib.load_model("tiny-dlm").fingerprint == models["bidirectional"].fingerprint
    assert srilib.load_model("tiny-dlm", seed=1).fingerprint != models["bidirectional"].fingerprint
    for name, fam in (("llada-8b-instruct", "llada"), ("llada-1.5", "llada"), ("dream-v0-instruct-7b", "dream")):
        spec = REGISTRY[name]
        assert spec.kind == "dlm" and spec.family == fam and spec.trust_remote_code and spec.loader == "dlm-hf"
    assert REGISTRY["llada-8b-instruct"].options["mask_id"] == 126336


def test_families_give_identical_aligned_outputs(models):
    """LLaDA (unshifted) and Dream (shifted) doubles over the same weights agree once aligned, padding included."""
    x, a, P = _batch(models["bidirectional"])
    ref_logits, ref_hidden = mask_predict(models["bidirectional"], x, a, [-1, 0, 1], start=P)
    assert ref_logits.shape[:2] == (2, L) and ref_hidden.shape == (2, L, 3, 32)
    assert ref_hidden.dtype == torch.float32
    for fam in ("llada", "dream"):
        logits, hidden = mask_predict(models[fam], x, a, [-1, 0, 1], start=P)
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hidden, ref_hidden, atol=1e-5, rtol=1e-5)
    # the Dream double really is shifted: reading its raw logits unaligned would be wrong
    raw = models["dream"].model(input_ids=x, attention_mask="full").logits[:, P:]
    assert not torch.allclose(raw, ref_logits, atol=1e-3)


def test_last_layer_is_after_final_norm(models):
    for fam, lm in models.items():
        inner = lm.model if fam == "bidirectional" else lm.model.inner
        got = {}
        h = inner.model.final_norm.register_forward_hook(lambda _m, _a, o: got.__setitem__("n", o))
        x, a, P = _batch(lm)
        _, hidden = mask_predict(lm, x, a, [-1], start=P)
        h.remove()
        torch.testing.assert_close(hidden[:, :, 0], got["n"][:, P:].float())


def test_padding_does_not_change_predictions(models):
    for fam, lm in models.items():
        x, a, P = _batch(lm)
        logits, hidden = mask_predict(lm, x, a, [-1], start=P)
        xs, as_, Ps = _batch(lm, PROMPTS[1:])  # the short prompt alone: no padding
        ls, hs = mask_predict(lm, xs, as_, [-1], start=Ps)
        torch.testing.assert_close(logits[1:], ls, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(hidden[1:], hs, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(logits[0], logits[1], atol=1e-3)  # different prompts, different predictions


def test_errors(models):
    lm = models["bidirectional"]
    x, a, P = _batch(lm)
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        mask_predict(lm, x, a, [7])
    no_logits, no_hidden = mask_predict(lm, x, a, [], start=P)
    assert no_hidden is None and no_logits.shape[1] == L
    bad = srilib.load_model("tiny-dlm")
    bad.family = "nonsense"
    with pytest.raises(ValueError, match="unknown DLM family"):
        mask_predict(bad, x, a, [-1])


def test_hub_loader_errors_name_the_fix(tmp_path):
    spec = ModelSpec("x", "dlm-hf", hf_id=str(tmp_path / "missing" / "model"), kind="dlm", trust_remote_code=True,
                     family="llada")
    with pytest.raises(ModelLoadError, match="network"):
        _load_dlm_hf(spec, torch.float32, "cpu")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ModelLoadError, match="pip install bitsandbytes"):
            _load_dlm_hf(spec, torch.float32, "cpu", load_in_8bit=True)


def test_models_that_ignore_padding_refuse_padded_batches(models):
    """Older LLaDA remote code ignores attention_mask: detected, and padded batches raise instead of mixing."""
    for lm in models.values():
        assert not ignores_padding(lm)
    old = srilib.load_model("tiny-dlm-llada")
    old.model = TinyLLaDA(old.model.inner, honour_mask=False)
    assert ignores_padding(old)
    old.model.srilib_ignores_padding = True
    x, a, P = _batch(old)
    with pytest.raises(ValueError, match="batch_size=1"):
        mask_predict(old, x, a, [-1], start=P)
    xs, as_, Ps = _batch(old, PROMPTS[:1])  # one prompt: no padding, fine
    assert mask_predict(old, xs, as_, [-1], start=Ps)[0].shape[1] == L


def test_hub_loader_on_a_local_directory(models, tmp_path):
    """The Hub loader's whole path, offline: a saved masked LM loaded as a 'bidirectional' DLM."""
    ref = models["bidirectional"]
    ref.model.save_pretrained(tmp_path)
    ref.tokenizer.save_pretrained(tmp_path)
    spec = ModelSpec("local-dlm", "dlm-hf", hf_id=str(tmp_path), kind="dlm", family="bidirectional")
    lm = _load_dlm_hf(spec, torch.float32, "cpu", end_tokens=("<|im_end|>", "<|endoftext|>", "<|nonexistent|>"))
    assert lm.kind == "dlm" and lm.mask_id == ref.mask_id and lm.fingerprint.startswith("dir:")
    assert set(lm.eos_ids) == {ref.tokenizer.eos_token_id, ref.tokenizer.pad_token_id}
    assert not getattr(lm.model, "srilib_ignores_padding", False)
    x, a, P = _batch(ref)
    torch.testing.assert_close(mask_predict(lm, x, a, [-1], start=P)[1], mask_predict(ref, x, a, [-1], start=P)[1])
