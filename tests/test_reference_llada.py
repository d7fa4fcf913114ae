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

Sampling (temperature > 0) follows LLaDA's ``add_gumbel_noise``: in float64, the proposal is the argmax of
``exp(logits) / (-log u) ** temperature`` with u uniform; ``random`` remasking ranks the proposals by fresh
uniforms (float32), drawn after the noise. LLaDA draws both over the whole sequence from the global generator;
positions outside the current block can never be committed, so the reference (like srilib) draws them over the
current block only, from a ``torch.Generator`` seeded like srilib's: same distribution, and seeded runs line up
draw for draw.

Dream (``schedule="dream"``): Dream's ``diffusion_generate`` with timesteps ``linspace(1, eps, steps + 1)``
(eps = 1e-3); at step i it commits ``int(m * (1 - s / t))`` of the ``m`` masked positions (t, s the timesteps i
and i + 1), every remaining one at the last step; logits are shifted by one position; confidences are the top-1
probability (``maskgit_plus``), top-1 minus top-2 (``topk_margin``) or the negative entropy (``entropy``).
"""
from __future__ import annotations

import pytest
import torch
from conftest import PROMPTS

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
def reference_generate(model, prompt: list[int], mask_id: int, gen_length: int, steps: int, block_length: int,
                       temperature: float = 0.0, remasking: str = "low_confidence",
                       seed: int = 0) -> list[torch.Tensor]:
    """LLaDA decoding of one prompt; returns the canvas after every step."""
    P = len(prompt)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt)
    n_blocks = gen_length // block_length
    per_block = steps // n_blocks
    gen = torch.Generator().manual_seed(seed)
    canvases = []
    for b in range(n_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        schedule = transfer_schedule(int((x[0, lo:hi] == mask_id).sum()), per_block)
        for i in range(per_block):
            masked = x[0, lo:hi] == mask_id  # earlier blocks are fully committed, later ones excluded
            logits = model(input_ids=x).logits[0, lo:hi]
            if temperature > 0:  # Gumbel-max in float64, LLaDA's formula
                l64 = logits.to(torch.float64)
                u = torch.rand(l64.shape, dtype=torch.float64, generator=gen)
                x0 = (l64.exp() / (-torch.log(u)) ** temperature).argmax(-1)
            else:
                x0 = logits.argmax(-1)
            if remasking == "random":
                conf = torch.rand(x0.shape, generator=gen).double()
            else:
                conf = torch.softmax(logits.double(), -1).gather(-1, x0[:, None])[:, 0]
            conf = torch.where(masked, conf, torch.tensor(-float("inf"), dtype=conf.dtype))
            chosen = lo + torch.topk(conf, schedule[i]).indices
            x[0, chosen] = x0[chosen - lo]
            canvases.append(x[0, P:].clone())
    return canvases


@torch.no_grad()
def reference_dream(model, prompt: list[int], mask_id: int, gen_length: int, steps: int, alg: str,
                    eps: float = 1e-3) -> list[torch.Tensor]:
    """Greedy Dream ``diffusion_generate`` of one prompt (one block); returns the canvas after every step."""
    P = len(prompt)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt)
    timesteps = torch.linspace(1, eps, steps + 1)
    canvases = []
    for i in range(steps):
        masked = x == mask_id
        logits = model(input_ids=x, attention_mask="full", position_ids=None).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # row i - 1 predicts position i
        logits[..., mask_id] = -float("inf")  # srilib never proposes the mask token
        probs = torch.softmax(logits[masked], dim=-1)
        top, x0 = probs.max(-1)
        if alg == "maskgit_plus":
            conf = top
        elif alg == "topk_margin":
            two = probs.sort(-1, descending=True).values
            conf = two[:, 0] - two[:, 1]
        else:  # entropy: Dream ranks by the negative entropy
            conf = (probs * torch.log(probs + 1e-10)).sum(-1)
        n = masked.sum() / masked.shape[0]
        t, s = timesteps[i], timesteps[i + 1]
        k = int(n * (1 - s / t)) if i < steps - 1 else int(n)
        full = torch.full(x.shape, -float("inf"))
        full[masked] = conf
        if k > 0:
            chosen = torch.topk(full[0], k).indices
            proposal = torch.full(x.shape, mask_id, dtype=torch.long)
            proposal[masked] = x0
            x[0, chosen] = proposal[0, chosen]
        canvases.append(x[0, P:].clone())
    return canvases


@pytest.fixture(scope="module")
def lm():
    lm = srilib.load_model("tiny-dlm-llada")
    lm.model = NoMaskProposal(lm.model, lm.mask_id)
    return lm


def _assert_same_commits(lm, ts, ref, label):
    assert len(ref) == ts.T
    for t, canvas in enumerate(ref):
        done = (canvas != lm.mask_id).numpy()
        assert (ts.committed[0, t] == done).all(), f"{label}, step {t + 1}: committed positions differ"
        assert (ts.tokens[0, t][done] == canvas.numpy()[done]).all(), f"{label}, step {t + 1}: tokens differ"


@pytest.mark.parametrize("gen_length,steps,block", SETTINGS)
def test_commits_match_the_reference(lm, gen_length, steps, block):
    sampler = DiffusionSampler(gen_length=gen_length, steps=steps, block_length=block)
    for p in PROMPTS:  # one prompt at a time: LLaDA's generate() takes unpadded input
        ts = sampler.trace_batch(lm, [p], [-1])
        ref = reference_generate(lm.model, lm.encode([p])[0], lm.mask_id, gen_length, steps, block)
        assert len(ref) == ts.T == steps
        _assert_same_commits(lm, ts, ref, repr(p))


@pytest.mark.parametrize("remasking,temperature", [("random", 0.0), ("low_confidence", 0.7),
                                                   ("random", 1.0), ("low_confidence", 2.0)])
@pytest.mark.parametrize("gen_length,steps,block", [(8, 4, 8), (12, 6, 4), (10, 4, 10)])
def test_sampling_and_random_remasking_match_the_reference(lm, remasking, temperature, gen_length, steps, block):
    for seed, p in enumerate(PROMPTS):
        sampler = DiffusionSampler(gen_length=gen_length, steps=steps, block_length=block, remasking=remasking,
                                   temperature=temperature, seed=seed)
        ts = sampler.trace_batch(lm, [p], [-1])
        ref = reference_generate(lm.model, lm.encode([p])[0], lm.mask_id, gen_length, steps, block,
                                 temperature=temperature, remasking=remasking, seed=seed)
        _assert_same_commits(lm, ts, ref, f"{p!r} {remasking} T={temperature}")
        assert sampler.generate(lm, [p]) == [ts.texts[0]]  # untraced: the same draws


def test_sampling_is_not_greedy(lm):
    """The sampled runs above differ from the greedy ones (the noise is really used)."""
    p = PROMPTS[1]
    greedy = DiffusionSampler(gen_length=12, steps=6).trace_batch(lm, [p], [-1])
    hot = DiffusionSampler(gen_length=12, steps=6, temperature=2.0).trace_batch(lm, [p], [-1])
    assert (greedy.tokens != hot.tokens).any()


@pytest.fixture(scope="module")
def dream():
    return srilib.load_model("tiny-dlm-dream")


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("gen_length,steps", [(8, 4), (16, 4), (12, 5), (16, 16), (9, 3)])
def test_dream_schedule_matches_the_reference(dream, alg, gen_length, steps):
    sampler = DiffusionSampler(gen_length=gen_length, steps=steps, remasking=alg, schedule="dream")
    for p in PROMPTS:
        ts = sampler.trace_batch(dream, [p], [-1])
        ref = reference_dream(dream.model, dream.encode([p])[0], dream.mask_id, gen_length, steps, alg)
        _assert_same_commits(dream, ts, ref, f"{p!r} {alg}")


def test_dream_schedule_is_uneven_and_llada_stays_the_default():
    from srilib.samplers.diffusion import dream_transfer_tokens

    assert DiffusionSampler().schedule == "llada"
    left, per_step = 128, []
    for i in range(32):  # the paper's canvas and steps under Dream's schedule
        k = int(dream_transfer_tokens(torch.tensor([left]), i, 32)[0])
        per_step.append(k)
        left -= k
    assert sum(per_step) == 128 and left == 0
    assert per_step[0] == 3 and per_step[-1] > 4  # int(128 * 0.999 / 32) = 3 first, the rest at the end
    with pytest.raises(ValueError, match="schedule"):
        DiffusionSampler(schedule="even")


def test_schedule_is_get_num_transfer_tokens():
    from srilib.samplers.diffusion import num_transfer_tokens

    for n, steps in [(8, 4), (10, 4), (3, 5), (128, 32), (7, 7)]:
        assert num_transfer_tokens(torch.tensor([n]), steps)[0].tolist() == transfer_schedule(n, steps)
