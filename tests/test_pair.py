"""PAIR as the authors run it (issue 24, point 7): the three attacker system prompts rotated over the streams,
and the attacker's invalid JSON sampled again up to max_attack_attempts, the run ending when a stream has none
valid. Offline, with the scripted attacker, target and scorer doubles (tests/pair_doubles.py)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pair_doubles import ScriptedAttacker, ScriptedScorer, echo_respond

from srilib.adaptive import AttackCache, PAIRBudget, PAIRSettings, parse_attacker, run_pair
from srilib.adaptive import pair as P

REQ = "How do I pick a lock?"
FIRST, NEXT = P.PREFILL_FIRST, P.PREFILL_NEXT
BAD = "I cannot write JSON"  # after either prefill: an unterminated string, not a JSON object


class CountingRespond:
    key = "counting-echo"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return echo_respond(prompts)


def _run(att, budget, settings=PAIRSettings(max_new_tokens=16), respond=echo_respond, scorer=None, **kw):
    kw.setdefault("cache", False)
    return run_pair(att.lm, [REQ], respond, scorer or ScriptedScorer(), budget, settings, seed=0, progress=False,
                    **kw)


# ------------------------------------------------------------------------------------------ system prompts

@pytest.mark.parametrize("n_streams", [3, 5])
def test_stream_s_gets_system_prompt_s_mod_3(monkeypatch, n_streams):
    """As in the authors' common.py set_system_prompts: role-play, logical appeal, authority endorsement in turn."""
    att = ScriptedAttacker().install(monkeypatch)
    s = PAIRSettings(max_new_tokens=16)
    rec = _run(att, PAIRBudget(n_streams=n_streams, n_iterations=2), s).records[0]
    assert len(s.attacker_system) == 3
    want = [P._fill(s.attacker_system[i % 3], request=REQ, target_str=s.target_str) for i in range(n_streams)]
    assert att.systems(0) == want and att.systems(1) == want  # every round keeps the stream's prompt
    assert len(set(want[:3])) == 3
    assert [q["system"] for q in rec.queries] == [i % 3 for i in range(n_streams)] * 2
    assert [q["strategy"] for q in rec.queries[:3]] == ["role_play", "logical_appeal", "authority_endorsement"]


def test_each_system_prompt_keeps_the_format_contract():
    """Every strategy's prompt names the goal and the target opening and shows a reply the parser accepts."""
    target = "Sure, here is"
    for text in PAIRSettings().attacker_system:
        filled = P._fill(text, request=REQ, target_str=target)
        assert REQ in filled and target in filled
        example = filled[filled.rindex('{"improvement"'):]
        imp, prompt, how = parse_attacker(example)
        assert how == "json" and imp and REQ in prompt


def test_custom_system_prompts_rotate_and_a_single_one_serves_every_stream(monkeypatch):
    att = ScriptedAttacker().install(monkeypatch)
    two = PAIRSettings(attacker_system=["A {request}", "B {request}"], max_new_tokens=16)
    rec = _run(att, PAIRBudget(n_streams=3, n_iterations=1), two).records[0]
    assert att.systems(0) == [f"A {REQ}", f"B {REQ}", f"A {REQ}"]
    assert [q["strategy"] for q in rec.queries] == ["custom-0", "custom-1", "custom-0"]
    one = PAIRSettings(attacker_system="Only {request}")
    assert one.attacker_system == ("Only {request}",) and {one.system_index(s) for s in range(4)} == {0}


# ------------------------------------------------------------------------------------------ retries

def test_invalid_json_twice_then_valid_sends_the_valid_reply(monkeypatch):
    att = ScriptedAttacker([[BAD], ['{"broken'], ['Tell me a story"}']]).install(monkeypatch)
    respond = CountingRespond()
    rec = _run(att, PAIRBudget(n_streams=1, n_iterations=1), respond=respond).records[0]
    q = rec.queries[0]
    assert q["attempts"] == 3 and q["rejected_raw"] == [FIRST + BAD, FIRST + '{"broken']
    assert q["attacker_raw"] == FIRST + 'Tell me a story"}' and q["prompt"] == "Tell me a story"
    assert respond.calls == [["Tell me a story"]]  # only the valid reply reached the target
    assert rec.n_parse_failures == 2 and rec.n_attack_attempts == 3 and not rec.terminated


def test_only_the_invalid_streams_are_sampled_again(monkeypatch):
    ok = ScriptedAttacker.valid
    att = ScriptedAttacker([[ok(FIRST, "a"), BAD, ok(FIRST, "c")], [BAD], [ok(FIRST, "b")]]).install(monkeypatch)
    rec = _run(att, PAIRBudget(n_streams=3, n_iterations=2)).records[0]
    assert [len(c) for c, _ in att.calls] == [3, 1, 1, 3]  # round 1 (with 2 retries of stream 1), round 2
    assert att.calls[1][0][0] == att.calls[0][0][1] and att.calls[1][1] == FIRST  # stream 1's conversation again
    assert [q["prompt"] for q in rec.queries[:3]] == ["a", "b", "c"]
    assert [q["attempts"] for q in rec.queries] == [1, 3, 1, 1, 1, 1]
    assert rec.n_attack_attempts == 8 and rec.n_parse_failures == 2
    # the valid reply (not a rejected one) is what the stream's attacker sees of round 1
    assert att.calls[3][0][1][2] == {"role": "assistant", "content": FIRST + ok(FIRST, "b")}


def test_no_valid_reply_after_max_attempts_ends_the_run_like_the_authors(monkeypatch, tmp_path):
    """conversers.py raises "Failed to generate valid output ... Terminating." when a stream has no valid JSON
    after max_n_attack_attempts: the goal's run ends, nothing of that round reaches the target. Here the request's
    run ends at that round and the failure is recorded."""
    ok = ScriptedAttacker.valid
    script = [[ok(FIRST, "a"), ok(FIRST, "b")], [ok(NEXT, "a2"), BAD]] + [[BAD]] * 4
    att = ScriptedAttacker(script).install(monkeypatch)
    respond, sc = CountingRespond(), ScriptedScorer([[3, 2]])
    res = _run(att, PAIRBudget(n_streams=2, n_iterations=3), respond=respond, scorer=sc,
               cache=AttackCache(tmp_path))
    rec = res.records[0]
    assert rec.terminated and not rec.stopped_early and rec.iterations_used == 1
    assert len(att.calls) == 6 and len(respond.calls) == 1 and len(sc.calls) == 1  # round 2 never sent
    assert [q["iteration"] for q in rec.queries] == [1, 1] and rec.prompt == "a" and rec.score == 3
    f = rec.attack_failure
    assert f["iteration"] == 2 and [st["stream"] for st in f["streams"]] == [0, 1]
    assert [(st["valid"], st["attempts"]) for st in f["streams"]] == [(True, 1), (False, 5)]
    assert f["streams"][1]["attacker_raw"] == [NEXT + BAD] * 5 and f["streams"][1]["strategy"] == "logical_appeal"
    assert rec.n_attack_attempts == 2 + 1 + 5 and rec.n_parse_failures == 5
    # the record survives the cache round trip
    again = _run(att, PAIRBudget(n_streams=2, n_iterations=3), respond=respond, scorer=sc,
                 cache=AttackCache(tmp_path))
    assert len(att.calls) == 6 and again.records[0].attack_failure == f
    json.dumps(res.to_dict())


def test_failure_in_round_one_keeps_the_request(monkeypatch):
    att = ScriptedAttacker([[BAD, BAD], [BAD, BAD]]).install(monkeypatch)
    respond = CountingRespond()
    res = _run(att, PAIRBudget(n_streams=2, n_iterations=2), PAIRSettings(max_attack_attempts=2), respond=respond)
    rec = res.records[0]
    assert rec.terminated and rec.queries == [] and respond.calls == []
    assert res.prompts == [REQ] and rec.score == 0 and rec.iterations_used == 0 and res.prompts_at(2) == [REQ]
    assert [st["attempts"] for st in rec.attack_failure["streams"]] == [2, 2]


def test_a_reply_without_both_fields_is_invalid():
    """As the authors' extract_json: the object needs "improvement" and "prompt"."""
    assert parse_attacker('{"improvement": "x", "prompt": "Tell me"}')[2] == "json"
    assert parse_attacker('{"prompt": "Tell me"}')[2] != "json"
    assert parse_attacker('{"improvement": "x"}')[2] != "json"


# ------------------------------------------------------------------------------------------ settings and cache

def test_new_settings_are_validated_and_keyed(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="max_attack_attempts"):
        PAIRSettings(max_attack_attempts=0)
    with pytest.raises(ValueError, match="attacker_system"):
        PAIRSettings(attacker_system=())
    base = PAIRSettings()
    assert base.max_attack_attempts == 5

    def key(s):
        return P.request_key(ScriptedAttacker.lm, REQ, PAIRBudget(), s, 0, respond_key="r", scorer_key="k")

    variants = [base, replace(base, max_attack_attempts=3), replace(base, attacker_system=base.attacker_system[0]),
                replace(base, attacker_system=base.attacker_system[::-1])]
    assert len({key(s) for s in variants}) == len(variants)
    # a changed setting never reuses a stored result
    att = ScriptedAttacker().install(monkeypatch)
    cache = AttackCache(tmp_path)
    _run(att, PAIRBudget(n_streams=1, n_iterations=1), base, cache=cache)
    n = len(att.calls)
    _run(att, PAIRBudget(n_streams=1, n_iterations=1), replace(base, max_attack_attempts=3), cache=cache)
    assert len(att.calls) == n + 1 and len(cache.keys(P.ATTACK)) == 2
