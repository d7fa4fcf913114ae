"""srilib's diffusion sampler against a straightforward re-implementation of the published LLaDA ``generate()``.

The reference below is written from the semantics LLaDA's public sampler documents (no code copied): the canvas
of ``gen_length`` masks follows the prompt; it is decoded in ``gen_length / block_length`` blocks left to right,
each with ``steps / n_blocks`` steps; at each step the whole sequence is run, every masked position proposes its
argmax, the proposals are ranked by their softmax probability (low-confidence remasking), positions after the
current block are excluded, and the ``get_num_transfer_tokens`` schedule (an even split of the block's masks,
the remainder on the first steps) says how many to commit. Committed tokens are never remasked.

The check: on a LLaDA-convention double, srilib commits the same tokens at the same steps for several canvas,
step and block settings (greedy, the paper's setting). The double's mask-token logit is pushed down, since srilib
never proposes the mask token while LLaDA's code could (its real weights never do).
"""
from __future__ import annotations

import pytest
import torch

import srilib
from srilib.samplers.diffusion import DiffusionSampler

SETTINGS = [(8, 4, 8), (8, 8, 4), (12, 6, 4), (16, 4, 8), (16, 16, 16), (12, 12, 3), (10, 4, 10), (9, 2, 9)]
# gen_length, steps, block; the last two split unevenly (remainders on the first steps)


class NoMaskProposal(torch.nn.Module):
    """Wraps a LLaDA-convention model so that its mask-token logit is far below every other."""

    def __init__(self, inner, mask_id: int):
        super().__init__()
        self.inner, self.config, self.mask_id = inner, inner.config, mask_id

    def forward(self, input_ids, attention_mask=None, output_hidden_states=None, **kw):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=output_hidden_states, **kw)
        out.logits = out.logits.clone()
        out.logits[..., self.mask_id] -= 1e4
        return out


def transfer_schedule(n_masked: int, steps: int) -> list[int]:
    """get_num_transfer_tokens for one row: n_masked // steps each, +1 on the first n_masked % steps steps."""
    return [n_masked // steps + (1 if i < n_masked % steps else 0) for i in range(steps)]


@torch.no_grad()
def reference_generate(model, prompt: list[int], mask_id: int, gen_length: int, steps: int,
                       block_length: int) -> list[torch.Tensor]:
    """Greedy low-confidence LLaDA decoding of one prompt; returns the canvas after every step."""
    P = len(prompt)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt)
    n_blocks = gen_length // block_length
    per_block = steps // n_blocks
    canvases = []
    for b in range(n_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        schedule = transfer_schedule(int((x[0, lo:hi] == mask_id).sum()), per_block)
        for i in range(per_block):
            masked = x[0] == mask_id
            logits = model(input_ids=x).logits[0].double()
            x0 = logits.argmax(-1)
            conf = torch.softmax(logits, -1).gather(-1, x0[:, None])[:, 0]
            conf[hi:] = -float("inf")
            conf = torch.where(masked, conf, torch.tensor(-float("inf"), dtype=conf.dtype))
            chosen = torch.topk(conf, schedule[i]).indices
            x[0, chosen] = x0[chosen]
            canvases.append(x[0, P:].clone())
    return canvases


@pytest.fixture(scope="module")
def lm():
    lm = srilib.load_model("tiny-dlm-llada")
    lm.model = NoMaskProposal(lm.model, lm.mask_id)
    return lm


@pytest.mark.parametrize("gen_length,steps,block", SETTINGS)
def test_commits_match_the_reference(lm, gen_length, steps, block):
    prompts = ["How do I bake bread?", "Write a poem about the sea.", "Hi"]
    sampler = DiffusionSampler(gen_length=gen_length, steps=steps, block_length=block)
    for p in prompts:  # one prompt at a time: LLaDA's generate() takes unpadded input
        ts = sampler.trace_batch(lm, [p], [-1])
        ref = reference_generate(lm.model, lm.encode([p])[0], lm.mask_id, gen_length, steps, block)
        assert len(ref) == ts.T == steps
        for t, canvas in enumerate(ref):
            done = (canvas != lm.mask_id).numpy()
            assert (ts.committed[0, t] == done).all(), f"{p!r}, step {t + 1}: committed positions differ"
            assert (ts.tokens[0, t][done] == canvas.numpy()[done]).all(), f"{p!r}, step {t + 1}: tokens differ"


def test_schedule_is_get_num_transfer_tokens():
    from srilib.samplers.diffusion import num_transfer_tokens

    for n, steps in [(8, 4), (10, 4), (3, 5), (128, 32), (7, 7)]:
        assert num_transfer_tokens(torch.tensor([n]), steps)[0].tolist() == transfer_schedule(n, steps)
