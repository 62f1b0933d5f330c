"""Subject rephrases: reply parsing, the disk cache's never-regenerate-silently rules, and both chat
backends (the API client over real loopback HTTP, the local model with left padding)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from robustedit.data.rephrase import (PAPER_PROMPT, MissingRephrasesError, RephraseCache, fill_prompt,
                                      generate_rephrases, parse_rephrases)
from robustedit.data.rephrase_backends import (ApiBackend, LocalChatBackend, RephraseBackend,
                                               RephraseBackendError)
from robustedit.errors import ConfigError, DataIntegrityError, ModelNotAvailableError, RecordError

REPO = Path(__file__).resolve().parents[1]
SMOLLM = REPO / "resources" / "models" / "smollm2-135m"


# ---------------------------------------------------------------- parsing

GPT_STYLE = """Here are 10 rephrases representing the same entity: Apple A5

1. **Apple A5 chip** - the processor inside the iPhone 4S
2. "A5 processor by Apple"
3) Apple's A5 system-on-chip.
   - a sub-bullet that explains item 3
4. A5 SoC from Apple,
5. *The A5 chip*
6. apple a5
7. Apple A5
8. A5 chip from Apple
9. a5 CHIP from apple
10. Apple Inc.'s A5 processor
11. The A5 (2011) by Apple Inc.
12. A5

These rephrases all refer to the same entity."""


def test_parse_gpt_style_numbered_list():
    assert parse_rephrases(GPT_STYLE, "Apple A5") == [
        "Apple A5 chip", "A5 processor by Apple", "Apple's A5 system-on-chip", "A5 SoC from Apple",
        "The A5 chip", "A5 chip from Apple", "Apple Inc.'s A5 processor", "The A5 (2011) by Apple Inc.", "A5",
    ]  # entity (any case), the case-insensitive duplicate of item 8, sub-bullet, preamble, epilogue dropped


def test_parse_bullet_list():
    text = ("Sure:\n- **A5 chip**: Apple's 2011 SoC\n* \u2018Apple A5 processor\u2019\n"
            "\u2022 APPLE A5\n+ A5 by Apple.\nThat's all.")
    assert parse_rephrases(text, "Apple A5") == ["A5 chip", "Apple A5 processor", "A5 by Apple"]


def test_parse_keeps_at_most_n_in_order():
    text = "\n".join(f"{i}. Name {i}" for i in range(1, 13))
    assert parse_rephrases(text, "X", n=10) == [f"Name {i}" for i in range(1, 11)]
    assert parse_rephrases(text, "X", n=3) == ["Name 1", "Name 2", "Name 3"]


def test_parse_unnumbered_lines_drop_preamble_and_chatter():
    text = ("Sure! Here are some rephrases:\n\nThomas J. Stieltjes\n  T. J. Stieltjes  \n"
            "'Stieltjes, Thomas Joannes'\n\u201cThe Dutch mathematician Stieltjes\u201d\nI hope this helps!")
    assert parse_rephrases(text, "Thomas Joannes Stieltjes") == [
        "Thomas J. Stieltjes", "T. J. Stieltjes", "Stieltjes, Thomas Joannes", "The Dutch mathematician Stieltjes"]


def test_parse_small_model_degenerate_output():
    # What SmolLM2-135M actually writes: the entity restated as a label, repeated, cut mid-line.
    text = ("1. Danielle Darrieux: Danielle Darrieux\n2. Danielle Darrieux: Danielle Darrieux\n"
            "3. Danielle Darrieux: the French actress\n4. danielle darrieux.\n5. ")
    assert parse_rephrases(text, "Danielle Darrieux") == ["the French actress"]
    assert parse_rephrases("", "Danielle Darrieux") == []
    assert parse_rephrases("1. Danielle Darrieux\n2. Danielle Darrieux", "Danielle Darrieux") == []


def test_parse_length_limit_abbreviations_and_numbers():
    long_item = "A " + "very " * 30 + "long description"
    text = f"1. {long_item}\n2. U.S.\n3. Ltd.\n4) 1.5 GHz Apple chip.\n(5) Apple A5 SoC;\n6. ``\n7. **A5**: short form"
    assert parse_rephrases(text, "Apple A5") == ["U.S.", "Ltd.", "1.5 GHz Apple chip", "Apple A5 SoC", "A5"]
    assert parse_rephrases(f"1. {long_item}", "X", max_chars=len(long_item)) == [long_item]


def test_parse_truncated_reply_loses_its_last_line():
    text = "1. Volvo XC90 SUV\n2. The XC90 by Volvo\n3. Volvo"
    assert parse_rephrases(text, "Volvo XC90", truncated=True) == ["Volvo XC90 SUV", "The XC90 by Volvo"]
    assert parse_rephrases(text, "Volvo XC90", truncated=None) == ["Volvo XC90 SUV", "The XC90 by Volvo", "Volvo"]
    assert parse_rephrases("Microsoft One", "Microsoft OneNote", truncated=True) == []


def test_parse_entity_with_colon_is_not_split():
    text = "1. Ginga: Nagareboshi Gin anime\n2. Ginga: Nagareboshi Gin"
    assert parse_rephrases(text, "Ginga: Nagareboshi Gin") == ["Ginga: Nagareboshi Gin anime"]


def test_fill_prompt():
    assert fill_prompt(PAPER_PROMPT, "Apple A5", 10) == "Give 10 rephrases representing the same entity: Apple A5"
    assert fill_prompt("{n} names for {entity} {not a field}", "X", 3) == "3 names for X {not a field}"
    with pytest.raises(ConfigError, match="entity"):
        fill_prompt("Give 10 rephrases of ENTITY", "X", 10)


# ---------------------------------------------------------------- cache and generation

class StubBackend(RephraseBackend):
    """Deterministic replies naming the entity; counts calls and records prompts."""

    kind = "stub"

    def __init__(self, model="m", version=1, k=10, fail_on_call=None):
        self.model, self.version, self.k, self.fail_on_call = model, version, k, fail_on_call
        self.calls, self.prompts = 0, []

    @property
    def settings(self):
        return {"k": self.k}

    def complete(self, prompts):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("backend died")
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            entity = p.split(": ", 1)[1]
            out.append("Here you go:\n"
                       + "\n".join(f"{i}. {entity} v{self.version} #{i}" for i in range(1, self.k + 1)))
        return out


def test_generate_then_cache_hit_without_backend_call(tmp_path):
    cache, backend = RephraseCache(tmp_path), StubBackend()
    run = generate_rephrases(["Apple A5", "Porsche 911", "Apple A5"], backend, cache, batch_size=1)
    assert (run.hits, run.misses, backend.calls) == (0, 2, 2)  # duplicates asked once
    assert backend.prompts == [fill_prompt(PAPER_PROMPT, "Apple A5", 10), fill_prompt(PAPER_PROMPT, "Porsche 911", 10)]
    assert run.rephrases["Apple A5"] == [f"Apple A5 v1 #{i}" for i in range(1, 11)]
    assert list(run.rephrases) == ["Apple A5", "Porsche 911"] and run.short == {}

    again = StubBackend()
    run2 = generate_rephrases(["Porsche 911", "Apple A5"], again, cache)
    assert (run2.hits, run2.misses, again.calls) == (2, 0, 0)
    assert run2.rephrases == run.rephrases

    doc = json.loads(run.cache_file.read_text())  # key stored inside; raw reply kept for audit
    assert doc["key"] == RephraseCache.make_key(backend, PAPER_PROMPT, 10)
    assert doc["entries"]["Apple A5"]["raw"].startswith("Here you go:")
    assert doc["entries"]["Apple A5"]["count"] == 10


def test_cache_key_differs_by_backend_model_settings_prompt_and_n(tmp_path):
    cache = RephraseCache(tmp_path)
    base = cache.path(cache.make_key(StubBackend("m"), PAPER_PROMPT, 10))
    assert base == cache.path(cache.make_key(StubBackend("m"), PAPER_PROMPT, 10))
    assert len(base.stem) == 16
    others = {cache.path(cache.make_key(StubBackend("other"), PAPER_PROMPT, 10)),
              cache.path(cache.make_key(StubBackend("m", k=3), PAPER_PROMPT, 10)),
              cache.path(cache.make_key(StubBackend("m"), "Rephrase {entity}", 10)),
              cache.path(cache.make_key(StubBackend("m"), PAPER_PROMPT, 5))}
    api = ApiBackend("http://127.0.0.1:1/v1", "m")
    others.add(cache.path(cache.make_key(api, PAPER_PROMPT, 10)))  # "api:m" vs "stub:m"
    assert len(others) == 5 and base not in others


def test_regenerate_semantics(tmp_path):
    cache = RephraseCache(tmp_path)
    generate_rephrases(["A", "B"], StubBackend(version=1), cache)
    v2 = StubBackend(version=2)
    run = generate_rephrases(["A", "C"], v2, cache)  # existing A is not overwritten
    assert run.rephrases["A"][0] == "A v1 #1" and run.rephrases["C"][0] == "C v2 #1"
    assert (run.hits, run.misses) == (1, 1) and v2.prompts == [fill_prompt(PAPER_PROMPT, "C", 10)]
    run = generate_rephrases(["A"], StubBackend(version=3), cache, regenerate=True)
    assert (run.hits, run.misses) == (0, 1) and run.rephrases["A"][0] == "A v3 #1"
    run = generate_rephrases(["A", "B", "C"], StubBackend(version=4), cache, allow_generate=False)
    assert [r[0] for r in run.rephrases.values()] == ["A v3 #1", "B v1 #1", "C v2 #1"]  # B, C untouched
    with pytest.raises(ConfigError, match="contradicts"):
        generate_rephrases(["A"], StubBackend(), cache, regenerate=True, allow_generate=False)


def test_allow_generate_false_names_missing_entities(tmp_path):
    cache, backend = RephraseCache(tmp_path), StubBackend()
    generate_rephrases(["Apple A5"], backend, cache)
    with pytest.raises(MissingRephrasesError) as err:
        generate_rephrases(["Apple A5", "Jeep Commander", "Nissan Laurel"], backend, cache, allow_generate=False)
    msg = str(err.value)
    assert "2 of 3 entities" in msg and "'Jeep Commander', 'Nissan Laurel'" in msg and "'Apple A5'" not in msg
    assert str(cache.path(cache.make_key(backend, PAPER_PROMPT, 10))) in msg
    assert backend.calls == 1  # nothing generated
    run = generate_rephrases(["Apple A5"], StubBackend(), cache, allow_generate=False)
    assert run.hits == 1


def test_fewer_than_n_kept_and_recorded_not_padded(tmp_path):
    run = generate_rephrases(["X", "Y"], StubBackend(k=3), RephraseCache(tmp_path), n=10)
    assert run.rephrases["X"] == ["X v1 #1", "X v1 #2", "X v1 #3"]
    assert run.short == {"X": 3, "Y": 3}


def test_bad_entities_and_arguments(tmp_path):
    with pytest.raises(RecordError, match="entity #1"):
        generate_rephrases(["A", "  "], StubBackend(), RephraseCache(tmp_path))
    with pytest.raises(ConfigError, match="entity"):
        generate_rephrases(["A"], StubBackend(), RephraseCache(tmp_path), prompt_template="rephrase it")


def test_interrupted_run_keeps_finished_batches_and_no_partial_file(tmp_path):
    cache = RephraseCache(tmp_path)
    with pytest.raises(RuntimeError, match="backend died"):
        generate_rephrases(["A", "B", "C"], StubBackend(fail_on_call=2), cache, batch_size=2)
    name = cache.path(cache.make_key(StubBackend(), PAPER_PROMPT, 10)).name
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.lock"]  # the file and its write lock
    backend = StubBackend()
    run = generate_rephrases(["A", "B", "C"], backend, cache)
    assert (run.hits, run.misses, backend.prompts) == (2, 1, [fill_prompt(PAPER_PROMPT, "C", 10)])


def test_failed_write_leaves_previous_file_intact(tmp_path):
    cache = RephraseCache(tmp_path)
    key = cache.make_key(StubBackend(), PAPER_PROMPT, 10)
    path = cache.store(key, {"A": {"raw": "1. a", "rephrases": ["a"]}})
    before = path.read_bytes()
    with pytest.raises(TypeError):  # not JSON-serialisable: fails halfway through writing
        cache.store(key, {"A": {"raw": "1. a", "rephrases": ["a"]}, "B": {"raw": {1, 2}, "rephrases": []}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, f"{path.name}.lock"]  # no temporary file


def test_cache_file_integrity_checks(tmp_path):
    cache = RephraseCache(tmp_path)
    key = cache.make_key(StubBackend(), PAPER_PROMPT, 10)
    path = cache.store(key, {"A": {"raw": "1. a", "rephrases": ["a"]}})
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "key": {**key, "model": "other"}}))
    with pytest.raises(DataIntegrityError, match="stored key does not match"):
        cache.load(key)
    path.write_text(json.dumps({**doc, "entries": {"A": {"raw": "x", "rephrases": "a"}}}))
    with pytest.raises(DataIntegrityError, match="'A'"):
        cache.load(key)


# ---------------------------------------------------------------- API backend over real loopback HTTP

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOpenAI(BaseHTTPRequestHandler):
    """Chat Completions on /v1/chat/completions; `mode` picks a reply: echo, 500, 400, garbage, nochoices."""

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": "not found"}')
        if srv.mode == "500":
            return self._send(500, b'{"error": {"message": "model exploded"}}')
        if srv.mode == "400":
            return self._send(400, b'{"error": {"message": "unknown model"}}')
        if srv.mode == "garbage":
            return self._send(200, b"<html>not json</html>")
        if srv.mode == "nochoices":
            return self._send(200, b'{"choices": []}')
        entity = body["messages"][0]["content"].split(": ", 1)[1]
        content = f"Here are rephrases of {entity}:\n1. The {entity}\n2. {entity} itself\n3. {entity}"
        finish = "stop"
        if srv.mode == "length":  # cut by max_tokens in the middle of item 3
            content, finish = content + f"\n3. {entity[:3]}", "length"
        reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": content}}]}
        self._send(200, json.dumps(reply).encode())

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    srv.mode, srv.requests = "echo", []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def base_url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_api_backend_request_and_reply(fake_server):
    backend = ApiBackend(base_url(fake_server) + "/", "gpt-4o-mini", max_tokens=77)
    assert backend.name == "api:gpt-4o-mini" and backend.url == base_url(fake_server) + "/chat/completions"
    replies = backend.complete(["Give 10 rephrases representing the same entity: Apple A5", "x: Porsche 911"])
    assert replies[0].splitlines()[1] == "1. The Apple A5" and "Porsche 911 itself" in replies[1]
    req = fake_server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] is None
    assert req["body"] == {"model": "gpt-4o-mini", "temperature": 0.0, "max_tokens": 77, "messages": [
        {"role": "user", "content": "Give 10 rephrases representing the same entity: Apple A5"}]}
    keyed = ApiBackend(base_url(fake_server), "m", api_key="sk-test", max_concurrency=2)
    assert keyed.complete(["a: A", "b: B", "c: C"])[2].endswith("3. C")  # order kept under concurrency
    assert fake_server.requests[-1]["auth"] == "Bearer sk-test" and "sk-test" not in repr(keyed)


def test_generate_rephrases_over_http(fake_server, tmp_path):
    run = generate_rephrases(["Apple A5", "Jeep Commander"], ApiBackend(base_url(fake_server), "m"),
                             RephraseCache(tmp_path), batch_size=1)
    assert run.rephrases == {"Apple A5": ["The Apple A5", "Apple A5 itself"],
                             "Jeep Commander": ["The Jeep Commander", "Jeep Commander itself"]}
    assert run.short == {"Apple A5": 2, "Jeep Commander": 2}
    assert json.loads(run.cache_file.read_text())["entries"]["Apple A5"]["truncated"] is False


def test_truncated_api_reply_drops_cut_item(fake_server, tmp_path):
    fake_server.mode = "length"
    backend = ApiBackend(base_url(fake_server), "m")
    assert backend.replies(["x: Apple A5"])[0].truncated is True
    assert backend.complete(["x: Apple A5"])[0].endswith("3. App")
    run = generate_rephrases(["Apple A5"], backend, RephraseCache(tmp_path))
    assert run.rephrases["Apple A5"] == ["The Apple A5", "Apple A5 itself"]  # not "App"
    entry = json.loads(run.cache_file.read_text())["entries"]["Apple A5"]
    assert entry["truncated"] is True and entry["raw"].endswith("3. App") and entry["count"] == 2


def test_api_backend_http_500_retries_then_fails(fake_server):
    fake_server.mode = "500"
    backend = ApiBackend(base_url(fake_server), "m", retries=2, backoff_s=0.0)
    with pytest.raises(RephraseBackendError, match=r"HTTP 500 .*model exploded"):
        backend.complete(["a: A"])
    assert len(fake_server.requests) == 3  # 1 + 2 retries


def test_api_backend_http_400_fails_without_retry(fake_server):
    fake_server.mode = "400"
    with pytest.raises(RephraseBackendError, match=r"HTTP 400 .*unknown model"):
        ApiBackend(base_url(fake_server), "m", retries=2, backoff_s=0.0).complete(["a: A"])
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize("mode, message", [("garbage", "not JSON"), ("nochoices", r"choices\[0\]")])
def test_api_backend_malformed_replies(fake_server, mode, message):
    fake_server.mode = mode
    with pytest.raises(RephraseBackendError, match=message):
        ApiBackend(base_url(fake_server), "m").complete(["a: A"])


def test_api_backend_connection_refused_names_url():
    url = f"http://127.0.0.1:{free_port()}/v1"  # just released: nothing listens there
    with pytest.raises(ModelNotAvailableError, match=r"127\.0\.0\.1:\d+/v1 \(connection refused\).*transformers serve"):
        ApiBackend(url, "m", retries=0).complete(["a: A"])


def test_api_backend_rejects_bad_config():
    with pytest.raises(ConfigError, match="not an http"):
        ApiBackend("127.0.0.1:8000", "m")
    with pytest.raises(ConfigError, match="model name"):
        ApiBackend("http://127.0.0.1:8000/v1", "")


# ---------------------------------------------------------------- local backend

def test_local_backend_batched_left_padding_equals_one_by_one(llama_tok, tiny_llama_model):
    backend = LocalChatBackend(tiny_llama_model, llama_tok, "cpu", model_name="tiny", max_new_tokens=6, batch_size=3)
    prompts = ["Give 10 rephrases representing the same entity: Danielle Darrieux", "Hi",
               "Give 10 rephrases representing the same entity: Autonomous University of Madrid"]
    batched = backend.complete(prompts)
    single = [backend.complete([p])[0] for p in prompts]
    assert batched == single and all(batched)
    assert llama_tok.padding_side == "right"  # the caller's tokenizer is untouched
    assert backend.name == "local:tiny" and backend.settings == {"decoding": "greedy", "max_new_tokens": 6}
    assert [r.truncated for r in backend.replies(prompts)] == [True, True, True]  # no eos in 6 random tokens


def test_local_backend_reply_ending_in_eos_is_not_truncated(llama_tok, tiny_llama_model):
    eos = llama_tok.eos_token_id

    def force_eos_after_two(module, args, output):
        # generation step k sees k new tokens in total; let two ordinary tokens out, then end the turn
        if force_eos_after_two.steps >= 2:
            output = output.clone()
            output[:, -1, eos] = 1e4
        force_eos_after_two.steps += 1
        return output

    force_eos_after_two.steps = 0
    handle = tiny_llama_model.lm_head.register_forward_hook(force_eos_after_two)
    try:
        reply = LocalChatBackend(tiny_llama_model, llama_tok, "cpu", model_name="tiny",
                                 max_new_tokens=6).replies(["Hi"])[0]
    finally:
        handle.remove()
    assert reply.truncated is False
    assert force_eos_after_two.steps == 3  # prefill -> token 1, step -> token 2, step -> eos, stop


def load_smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (SMOLLM / "config.json").is_file():
        pytest.skip(f"{SMOLLM} not prepared (run `make models`)")
    tok = AutoTokenizer.from_pretrained(SMOLLM)
    tok.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(SMOLLM, dtype="float32").eval()
    return model, tok


@pytest.mark.integration
def test_transformers_serve_matches_local_backend(tmp_path):
    """`transformers serve` on the local SmolLM2 folder, offline on loopback, answers ApiBackend with
    exactly the text LocalChatBackend generates (both greedy, fp32, same chat template)."""
    pytest.importorskip("fastapi", reason="transformers serve needs fastapi, uvicorn, openai")
    pytest.importorskip("uvicorn", reason="transformers serve needs fastapi, uvicorn, openai")
    pytest.importorskip("openai", reason="transformers serve needs fastapi, uvicorn, openai")
    model, tok = load_smollm()
    prompts = [fill_prompt(PAPER_PROMPT, "Danielle Darrieux", 10)]  # one short reply: CPU time is shared
    local = LocalChatBackend(model, tok, "cpu", model_name="smollm2-135m", max_new_tokens=16).complete(prompts)

    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(cli), "serve", str(SMOLLM), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--dtype", "float32"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180  # model load takes ~10 s on a free CPU
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n"
                            f"{(tmp_path / 'serve.log').read_text()[-2000:]}")
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve not ready within 180 s")
            time.sleep(1)
        api = ApiBackend(f"http://127.0.0.1:{port}/v1", str(SMOLLM), max_tokens=16, timeout_s=300)
        assert api.complete(prompts) == local and local[0].strip()
        with pytest.raises(RephraseBackendError, match="HTTP 400"):  # server is pinned to one model
            ApiBackend(f"http://127.0.0.1:{port}/v1", "gpt-4o-mini", retries=0).complete(prompts)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


@pytest.mark.integration
def test_local_smollm_batched_equals_single():
    model, tok = load_smollm()
    backend = LocalChatBackend(model, tok, "cpu", model_name="smollm2-135m", max_new_tokens=16, batch_size=2)
    prompts = [fill_prompt(PAPER_PROMPT, s, 10) for s in ("Go Hyeon-jeong", "Autonomous University of Madrid")]
    assert backend.complete(prompts) == [backend.complete([p])[0] for p in prompts]
    assert tok.padding_side == "right"
