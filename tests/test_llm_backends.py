"""Replay and kg-profile backends, the infer_interests pipeline and its CLI handler."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cikg.data import Dataset, synthetic
from cikg.errors import ConfigError, DatasetError, LLMError
from cikg.llm import (
    NOT_AN_LLM,
    RAW_FILE,
    KGProfileBackend,
    LLMConfig,
    OpenAIBackend,
    ReplayBackend,
    ResponseCache,
    RetryPolicy,
    build_requests,
    cache_key,
    export_replay,
    infer_interests,
)
from cikg.llm.commands import register_infer, register_llm
from cikg.llm.echo import EchoConfig
from cikg.llm.kgprofile import entity_name, history_matrix, top_k_per_row
from cikg.llm.serve import ServeConfig, llama_cpp_available, llama_server

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer, default_answer  # noqa: E402


def kg_dataset() -> Dataset:
    # items 0..3, entities 4..8; user 0 likes 0,1,2 ; user 1 likes 3
    train = torch.tensor([[0, 0, 0, 1], [0, 1, 2, 3]])
    kg = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 3, 7],   # head
                       [0, 0, 0, 1, 1, 1, 0, 1, 2],   # relation
                       [4, 4, 4, 5, 5, 6, 8, 5, 3]])  # tail (7 -> 3 is entity -> item)
    return Dataset(name="tinykg", n_users=2, n_items=4, train=train, test=torch.tensor([[0], [3]]), n_entities=9,
                   n_relations=3, kg=kg, user_ids=["a", "b"],
                   item_text=["Dune Messiah", "Children of Dune", "Dune", "Emma"],
                   entity_ids=["i0", "i1", "i2", "i3", "http://dbpedia.org/resource/Science_fiction",
                               "http://dbpedia.org/resource/English_language", "12345",
                               "http://dbpedia.org/resource/Jane_Austen", "http://dbpedia.org/resource/Category:Novels"],
                   relation_names=["genre", "language", "author"])


def test_entity_names_from_uris_and_opaque_ids():
    assert entity_name(None, "http://dbpedia.org/resource/Science_fiction") == "Science fiction"
    assert entity_name(None, "http://dbpedia.org/resource/Category:1990s_fantasy_novels") == "1990s fantasy novels"
    assert entity_name("Dune (novel)", "x") == "Dune"
    for opaque in ("14954", "m.0abc12", "YagoPermanentlyLocatedEntity", "Event100029378"):
        assert entity_name(None, opaque) is None and entity_name(opaque, "x") is None


def test_history_matrix_and_top_k_are_vectorised_and_right():
    ds = synthetic(n_users=50, n_items=40, seed=1)
    users = torch.tensor([3, 7, 11])
    h = history_matrix(ds, users, history_len=4).to_dense()
    for row, u in enumerate(users.tolist()):
        expected = torch.zeros(ds.n_items)
        expected[ds.history(u, last=4)] = 1
        assert torch.equal(h[row], expected)
    rows = torch.tensor([0, 0, 0, 1, 1, 2])
    cols = torch.tensor([5, 6, 7, 1, 2, 9])
    scores = torch.tensor([1.0, 3.0, 2.0, 0.5, 0.7, 4.0])
    best = top_k_per_row(rows, cols, scores, 2)
    assert sorted(zip(rows[best].tolist(), cols[best].tolist(), strict=True)) == [(0, 6), (0, 7), (1, 1), (1, 2), (2, 9)]


def test_kg_profile_ranks_shared_entities_and_is_labelled(caplog):
    ds = kg_dataset()
    requests, skipped = build_requests(ds)
    out = KGProfileBackend(ds).complete_many(requests)
    # user a: Science fiction (on 3 of its items) before English language (2); entity 6 ("12345") has no
    # name; title words fill up, rarer words first ("messiah" on 1 item beats "dune" on 3 of the 4 items)
    phrases = out[0].text.split(", ")
    assert phrases[:2] == ["Science fiction", "English language"]
    assert phrases[2] == "messiah" and set(phrases[2:]) == {"messiah", "children", "dune"}
    assert "12345" not in out[0].text
    # user b: Jane Austen (entity -> item edge) and Novels (1 item each, rare) before English language (common)
    b = out[1].text.split(", ")
    assert set(b[:2]) == {"Jane Austen", "Novels"} and b[2:] == ["English language", "emma"]
    assert all(c.source == f"kg-profile ({NOT_AN_LLM})" and c.meta["not_an_llm"] for c in out)
    assert out[0].meta["evidence"][0] == {"phrase": "Science fiction", "kind": "entity:genre", "count": 3}


_PROFILE_SCRIPT = """
import sys
from cikg.data import load_dataset
from cikg.llm import KGProfileBackend
ds = load_dataset(sys.argv[1])
print("\\n".join(", ".join(p for p, _, _ in row) for row in KGProfileBackend(ds).profiles(range(600))))
"""


def test_kg_profile_answers_do_not_depend_on_the_hash_seed(data_dir):
    """Score ties are broken by feature order, which must not follow Python's per-process string hashing."""
    import os
    import subprocess

    answers = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _PROFILE_SCRIPT, str(data_dir / "book-crossing")], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        answers.append(done.stdout.splitlines())
    assert len(answers[0]) == 600 and sum(bool(a) for a in answers[0]) > 500
    assert answers[0] == answers[1]


def test_kg_profile_on_real_dbbook_uses_named_entities(dbbook, tmp_path):
    users = range(300)
    result = infer_interests(dbbook, KGProfileBackend(dbbook), users=users, out_dir=tmp_path)
    assert result.not_an_llm and result.parse["ok"] == 300
    assert result.frame.groupby("user").size().max() <= 5
    summary = json.loads((tmp_path / "llm_summary.json").read_text())
    assert summary["label"] == NOT_AN_LLM and summary["not_an_llm"]
    first = json.loads((tmp_path / RAW_FILE).read_text().splitlines()[0])
    assert first["not_an_llm"] and "not an LLM" in first["source"]
    phrases = set(result.frame["phrase"])
    assert not any(p.isdigit() for p in phrases) and len(phrases) > 100


def test_pipeline_writes_artifact_and_replay_reproduces_it(tmp_path):
    ds = synthetic(n_users=40, n_items=30, seed=2)
    with FaultServer() as srv:
        srv.plan["__never__"] = []
        requests, _ = build_requests(ds)
        srv.plan[requests[1].message_dicts[1]["content"]] = ["503"] * 2
        srv.plan[requests[2].message_dicts[1]["content"]] = ["400"]
        config = LLMConfig(model="test-model", base_url=srv.base_url, progress=False,
                           retry=RetryPolicy(max_attempts=2, base_delay=0.01))
        backend = OpenAIBackend(config, tmp_path / "c.sqlite")
        result = infer_interests(ds, backend, out_dir=tmp_path)
    assert result.parse == {"ok": 38, "unparsable": 0, "echo": 0, "failed": 2, "skipped": 0, "structured": 0}
    lines = [json.loads(x) for x in (tmp_path / RAW_FILE).read_text().splitlines()]
    assert len(lines) == 40 and {r["status"] for r in lines} == {"ok", "failed"}
    failed = [r for r in lines if r["status"] == "failed"]
    assert failed[0]["reason"].startswith("http 503") and failed[1]["reason"].startswith("http 400")
    assert list(result.frame.columns) == ["user", "phrase"] and result.frame["user"].dtype == "int64"
    ok0 = lines[0]
    assert ok0["phrases"] == ["fantasy", "mystery novels", default_answer(
        requests[0].message_dicts[1]["content"]).split(", ")[2]]

    replayed = infer_interests(ds, ReplayBackend(tmp_path / RAW_FILE), users=[r.user for r in requests
                                                                              if r.user not in (1, 2)])
    expect = result.frame[~result.frame["user"].isin([1, 2])].reset_index(drop=True)
    pd.testing.assert_frame_equal(replayed.frame.reset_index(drop=True), expect)
    with pytest.raises(LLMError, match=r"no answer for user .*remapped id 1"):
        ReplayBackend(tmp_path / RAW_FILE).complete_many(requests[:3])

    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert export_replay(cache, tmp_path / "replay.jsonl") == 38
    by_key = ReplayBackend(tmp_path / "replay.jsonl", config)
    assert [c.text for c in by_key.complete_many([requests[0]])] == [ok0["raw"]]


def test_replay_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "1", "raw": "x"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2"):
        ReplayBackend(bad)
    with pytest.raises(DatasetError, match="not found"):
        ReplayBackend(tmp_path / "missing.jsonl")


def test_cli_infer_and_export(tmp_path, capsys, monkeypatch):
    parser = argparse.ArgumentParser(prog="cikg")
    sub = parser.add_subparsers(dest="command")
    interests = sub.add_parser("interests").add_subparsers(dest="interests_command")
    register_infer(interests)
    register_llm(sub)
    with FaultServer() as srv:
        args = parser.parse_args(["interests", "infer", "book-crossing", "--base-url", srv.base_url, "--model", "m",
                                  "--users", "25", "--concurrency", "4", "-o", str(tmp_path), "--no-progress"])
        assert args.func(args) == 0
        n = len(srv.requests)
        assert args.func(args) == 0 and len(srv.requests) == n  # a re-run is served by the cache
    text = capsys.readouterr().out
    assert "requests: 25 (cached 0, sent 25" in text and "requests: 25 (cached 25, sent 0" in text
    args = parser.parse_args(["llm", "export-replay", str(tmp_path / "llm_cache.sqlite"), "-o",
                              str(tmp_path / "r.jsonl")])
    assert args.func(args) == 0 and len((tmp_path / "r.jsonl").read_text().splitlines()) == 25
    args = parser.parse_args(["interests", "infer", "book-crossing", "--backend", "replay", "--replay",
                              str(tmp_path / "r.jsonl"), "--users", "25", "-o", str(tmp_path / "re")])
    assert args.func(args) == 0


def test_import_replay_resumes_a_run_on_a_fresh_cache(tmp_path, capsys):
    """Answers exported from one machine's cache and imported into a new cache are not asked again."""
    parser = argparse.ArgumentParser(prog="cikg")
    sub = parser.add_subparsers(dest="command")
    register_infer(sub.add_parser("interests").add_subparsers(dest="interests_command"))
    register_llm(sub)
    with FaultServer() as srv:
        infer = ["interests", "infer", "book-crossing", "--base-url", srv.base_url, "--model", "m",
                 "--concurrency", "2", "--no-progress"]
        args = parser.parse_args([*infer, "--users", "10", "-o", str(tmp_path / "first")])
        assert args.func(args) == 0
        args = parser.parse_args(["llm", "export-replay", str(tmp_path / "first" / "llm_cache.sqlite"),
                                  "-o", str(tmp_path / "r.jsonl")])
        assert args.func(args) == 0
        lines = (tmp_path / "r.jsonl").read_text().splitlines()
        with open(tmp_path / "r.jsonl", "a") as f:  # a line that names no key cannot be matched to a request
            f.write(json.dumps({"user_id": "x", "raw": "Fantasy"}) + "\n")
        fresh = tmp_path / "second" / "llm_cache.sqlite"
        args = parser.parse_args(["llm", "import-replay", str(tmp_path / "r.jsonl"), "--cache", str(fresh)])
        assert args.func(args) == 0
        assert f"{len(lines)} answer(s) stored in {fresh}; 1 line(s) without a key skipped" in capsys.readouterr().out
        sent = len(srv.requests)
        args = parser.parse_args([*infer, "--users", "25", "-o", str(tmp_path / "second")])
        assert args.func(args) == 0
        assert len(srv.requests) - sent == 25 - len(lines)
    first = pd.read_json(tmp_path / "first" / RAW_FILE, lines=True)
    second = pd.read_json(tmp_path / "second" / RAW_FILE, lines=True).head(len(first))
    assert second["raw"].tolist() == first["raw"].tolist() and second["cached"].all()


# ------------------------------------------------------------------------------ structured answers, echoes
def titled_dataset() -> Dataset:
    """Three users; user 0 holds a book titled like the fault server's second phrase ("Mystery novels")."""
    train = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 2, 3, 4]])
    return Dataset(name="tinybooks", n_users=3, n_items=5, train=train, test=torch.tensor([[0], [0]]),
                   user_ids=["a", "b", "c"],
                   item_text=["Mystery Novels", "Dune", "Emma", "The Hobbit", "Ulysses"])


def test_structured_mode_sends_the_schema_and_records_structured_answers(tmp_path):
    ds = synthetic(n_users=12, n_items=30, seed=3)
    with FaultServer(json_answers=True) as srv:
        config = LLMConfig(model="m", base_url=srv.base_url, progress=False)
        result = infer_interests(ds, OpenAIBackend(config, tmp_path / "c.sqlite"), out_dir=tmp_path)
        assert {r["response_format"] for r in srv.requests} == {"json_schema"}
    lines = [json.loads(x) for x in (tmp_path / RAW_FILE).read_text().splitlines()]
    assert all(r["structured"] and r["response_format"] == "json_schema" for r in lines)
    assert result.parse["structured"] == result.parse["ok"] == 12
    assert json.loads(lines[0]["raw"])["interests"][0] == "Fantasy" and lines[0]["phrases"][:2] == [
        "fantasy", "mystery novels"]
    summary = json.loads((tmp_path / "llm_summary.json").read_text())
    assert summary["parse"]["structured"] == 12 and summary["echo"]["phrases"] == 36


def test_refused_json_schema_falls_back_to_json_object_then_the_cache_serves_it(tmp_path, caplog):
    ds = synthetic(n_users=10, n_items=30, seed=4)
    requests, _ = build_requests(ds)
    with FaultServer(refuse_formats=("json_schema",), json_answers=True) as srv:
        config = LLMConfig(model="m", base_url=srv.base_url, progress=False, concurrency=1,
                           retry=RetryPolicy(max_attempts=2, base_delay=0.01))
        backend = OpenAIBackend(config, tmp_path / "c.sqlite")
        out = backend.complete_many(requests)
        refused = [r for r in srv.requests if r["behaviour"] == "refused"]
        assert len(refused) == 1 and refused[0]["response_format"] == "json_schema"  # once per run
        assert {r["response_format"] for r in srv.requests if r["behaviour"] == "ok"} == {"json_object"}
        assert all(c.ok and c.attempts == 1 and c.meta["response_format"] == "json_object" for c in out)
        assert "refused response_format json_schema" in caplog.text
        assert {c.key for c in out} == {config.key_of(r, "json_object") for r in requests}
        n = len(srv.requests)
        again = OpenAIBackend(config, tmp_path / "c.sqlite").complete_many(requests)
        assert len(srv.requests) == n and all(c.cached for c in again)  # found under the json_object key
        assert [c.meta["response_format"] for c in again] == ["json_object"] * len(requests)
    with FaultServer(refuse_formats=("json_schema", "json_object")) as srv:
        config = LLMConfig(model="m", base_url=srv.base_url, progress=False, concurrency=1)
        out = OpenAIBackend(config, None).complete_many(requests[:3])
        assert [c.meta["response_format"] for c in out] == ["off"] * 3 and all(c.ok for c in out)
        assert [r["behaviour"] for r in srv.requests] == ["refused", "refused", "ok", "ok", "ok"]


def test_response_format_is_in_the_cache_key_and_free_text_keys_are_unchanged():
    (request, *_), _ = build_requests(synthetic(n_users=3, n_items=30, seed=0))
    auto = LLMConfig(model="m", base_url="http://127.0.0.1:1/v1")
    off = LLMConfig(model="m", base_url="http://127.0.0.1:1/v1", structured="off")
    plain = cache_key("m", request.message_dicts, off.params, request.template, request.template_version)
    assert off.key_of(request) == plain == auto.key_of(request, "off")
    keys = {auto.key_of(request), auto.key_of(request, "json_object"), plain}
    assert len(keys) == 3 and auto.key_of(request) == auto.key_of(request, "json_schema")
    assert auto.request_params(request)["response_format"]["json_schema"]["schema"]["properties"]["interests"][
        "maxItems"] == 5
    assert "response_format" not in off.request_params(request)
    untemplated = dataclasses.replace(request, schema="")  # e.g. the augment prompts: never a response_format
    assert "response_format" not in auto.request_params(untemplated)
    assert auto.key_of(untemplated) == off.key_of(untemplated)
    with pytest.raises(ConfigError, match="structured"):
        LLMConfig(structured="yes")


def test_echo_filter_in_the_pipeline_and_its_summary(tmp_path):
    ds = titled_dataset()
    with FaultServer() as srv:
        config = LLMConfig(model="m", base_url=srv.base_url, progress=False, structured="off")
        result = infer_interests(ds, OpenAIBackend(config, tmp_path / "c.sqlite"), out_dir=tmp_path)
        kept = infer_interests(ds, OpenAIBackend(config, tmp_path / "c.sqlite"), out_dir=tmp_path / "k",
                               echo=EchoConfig(keep=True))
    by_user = {r["user_id"]: r for r in result.records}
    assert by_user["a"]["echoes"] == ["mystery novels"] and "mystery novels" not in by_user["a"]["phrases"]
    assert by_user["b"]["echoes"] == [] and "mystery novels" in by_user["b"]["phrases"]
    assert result.echo["echoes"] == 1 and result.echo["phrases"] == 9 and result.echo["dropped"]
    assert len(result.frame) == 8 and len(kept.frame) == 9 and not kept.echo["dropped"]
    summary = json.loads((tmp_path / "llm_summary.json").read_text())
    assert summary["echo"]["echoes"] == 1 and summary["echo"]["rate"] == pytest.approx(1 / 9)
    line = json.loads((tmp_path / RAW_FILE).read_text().splitlines()[0])
    assert line["echoes"] == ["mystery novels"] and line["structured"] is False
    assert line["response_format"] == "off"


def test_cli_infer_prompt_structured_and_keep_echoes(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="cikg")
    sub = parser.add_subparsers(dest="command")
    register_infer(sub.add_parser("interests").add_subparsers(dest="interests_command"))
    defaults = parser.parse_args(["interests", "infer", "x", "-o", str(tmp_path)])
    assert defaults.prompt == "cikgrec-interests" and defaults.structured == "auto" and not defaults.keep_echoes
    with FaultServer(json_answers=True) as srv:
        args = parser.parse_args(["interests", "infer", "book-crossing", "--base-url", srv.base_url, "--users", "6",
                                  "--prompt", "cikgrec-interests-fewshot", "--structured", "json_object",
                                  "--keep-echoes", "-o", str(tmp_path), "--no-progress"])
        assert args.func(args) == 0
        assert {r["response_format"] for r in srv.requests} == {"json_object"}
    summary = json.loads((tmp_path / "llm_summary.json").read_text())
    assert summary["template"] == "cikgrec-interests-fewshot" and summary["template_version"] == "1"
    assert summary["parse"]["structured"] == summary["parse"]["ok"] > 0 and not summary["echo"]["dropped"]
    assert "echoes: 0 of" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["interests", "infer", "x", "-o", str(tmp_path), "--prompt", "nope"])


@pytest.mark.llm
@pytest.mark.skipif(not llama_cpp_available(), reason="needs the local-llm extra (llama-cpp-python[server])")
def test_structured_mode_against_the_real_llama_cpp_server(bookcrossing, tmp_path, caplog):
    """llama-cpp-python's server refuses json_schema (HTTP 500 naming response_format) and honours json_object
    with a schema: auto mode falls back once and gets grammar-constrained JSON from SmolLM2."""
    with llama_server(ServeConfig(n_threads=2)) as server:
        config = LLMConfig(model="smollm2", base_url=server.base_url, concurrency=1, max_tokens=96, timeout=300,
                           progress=False)
        result = infer_interests(bookcrossing, OpenAIBackend(config, tmp_path / "c.sqlite"), users=range(4),
                                 out_dir=tmp_path, history_len=10)
    sent = [r for r in result.records if r["status"] != "skipped"]
    assert sent and {r["response_format"] for r in sent} == {"json_object"}
    assert "refused response_format json_schema" in caplog.text
    assert all(r["raw"].lstrip().startswith("{") for r in sent)  # grammar-constrained
    assert sum(r["structured"] for r in sent) >= 1  # the others were cut off by max_tokens (then salvaged)
    assert all(r["status"] in ("ok", "echo") for r in sent)
    assert result.echo["phrases"] > 0 and result.summary.failed == 0
