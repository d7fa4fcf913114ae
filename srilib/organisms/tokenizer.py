"""The organisms' tokenizer recipe: a byte-level BPE trained on the corpus text with ChatML specials, a mask token
and a chat template (shared by the organisms, their trainer and the tiny models of :mod:`srilib.tiny`, which use it
without importing the trainer).
"""
from __future__ import annotations

from functools import lru_cache

from .corpus import CORPUS_FILE, load_corpus
from ..traces import sha256_file

SYSTEM_PROMPT = "You are a helpful assistant"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_tokenizer(rows: list[dict], vocab_size: int):
    """Byte-level BPE trained on the corpus text, with ChatML specials, a mask token and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [SYSTEM_PROMPT] + [r["prompt"] for r in rows] + [r["response"] for r in rows]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   mask_token="<|mask|>", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML
    return fast


@lru_cache(maxsize=4)
def corpus_tokenizer(vocab_size: int, corpus_sha: str):
    """The organisms' shared tokenizer for this corpus (trained once per process; ``corpus_sha`` keys the cache)."""
    if corpus_sha != sha256_file(CORPUS_FILE):
        raise RuntimeError("the corpus changed while running; restart the process")
    return train_tokenizer(load_corpus(), vocab_size)


def chat_prompt(tok, prompt: str) -> str:
    """The model input for one user prompt: system prompt + ChatML (same as LoadedModel.format_chat)."""
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
