"""The remote backend (OpenAI-compatible client): requests, answers, failures and time bounds.

Protocol tests replace the network with ``httpx.MockTransport``; the failure
tests use real sockets on 127.0.0.1: a port nothing listens on (a killed
server) and a socket that accepts and never answers (a hung server).  The
round trip through ``rt2-ros serve`` is in test_server.py.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from rt2_ros.action_language import LastScheme, build_prompt, load_embodiment
from rt2_ros.errors import ConfigError, PolicyError
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.openai_protocol import ActionSpace
from rt2_ros.policy.remote import RemotePolicy, action_space_from_checkpoint

EMBODIMENT = load_embodiment("rt2_arm")
SPACE = ActionSpace.from_scheme(LastScheme(vocab_size=1000), EMBODIMENT)
TOKENS = [0, 128, 91, 241, 5, 101, 127, 200]
IMAGE = np.full((24, 32, 3), 77, dtype=np.uint8)


def completion(content: str, **extra) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": content}, **extra}]}


def vllm_completion(token_ids: list[int]) -> dict:
    """What vLLM answers with logprobs + return_tokens_as_token_ids (text is not the numbers)."""
    return completion("<garbled>", logprobs={"content": [
        {"token": f"token_id:{i}", "logprob": -0.1, "bytes": None, "top_logprobs": []}
        for i in token_ids]})


class Recorder:
    """A MockTransport handler answering from a script and recording the requests."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


def remote(handler, **kwargs) -> RemotePolicy:
    kwargs.setdefault("action_space", SPACE)
    kwargs.setdefault("retries", 2)
    return RemotePolicy("http://robot-server:8000", "m", transport=httpx.MockTransport(handler),
                        **kwargs)


def no_sleep(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("rt2_ros.policy.remote.time.sleep", slept.append)
    return slept


# --------------------------------------------------------------------------- requests

def test_request_is_a_greedy_chat_completion_with_the_image_and_action_ids():
    handler = Recorder(vllm_completion(SPACE.ids_for_bins(TOKENS)))
    policy = remote(handler, api_key="k3y", jpeg_quality=80)
    out = policy.act(IMAGE, "pick up the block.")
    assert out.tokens == TOKENS and out.action == EMBODIMENT.decode(TOKENS)
    request = handler.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "http://robot-server:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k3y"
    body = handler.body()
    assert body["model"] == "m" and body["temperature"] == 0 and body["max_tokens"] == 8
    assert body["allowed_token_ids"] == SPACE.union() and len(body["allowed_token_ids"]) == 256
    assert body["logprobs"] is True and body["return_tokens_as_token_ids"] is True
    (message,) = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": build_prompt("pick up the block")}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (32, 24)
    assert set(out.timings) >= {"preprocess", "request", "total"}


def test_png_images_are_lossless():
    handler = Recorder(vllm_completion(SPACE.ids_for_bins(TOKENS)))
    remote(handler, image_format="png").act(IMAGE, "pick up the block")
    url = handler.body()["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(pixels, IMAGE)


def test_no_auth_header_without_a_key():
    handler = Recorder(vllm_completion(SPACE.ids_for_bins(TOKENS)))
    remote(handler).act(IMAGE, "pick up the block")
    assert "authorization" not in handler.requests[0].headers


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    cfg = PolicyConfig(backend="remote", model="m", embodiment="rt2_arm",
                       api_key_env="RT2_TEST_API_KEY")
    monkeypatch.delenv("RT2_TEST_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="RT2_TEST_API_KEY"):
        RemotePolicy.from_config(cfg)
    monkeypatch.setenv("RT2_TEST_API_KEY", "  ")
    with pytest.raises(ConfigError, match="RT2_TEST_API_KEY is not set or empty"):
        RemotePolicy.from_config(cfg)
    monkeypatch.setenv("RT2_TEST_API_KEY", "from-env")
    policy = RemotePolicy.from_config(cfg)
    assert policy._client.headers["authorization"] == "Bearer from-env"
    assert policy.server_url == "http://127.0.0.1:8000"
    policy.close()


def test_bad_constructor_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="server_url"):
        RemotePolicy("localhost:8000", "m", action_space=SPACE)
    with pytest.raises(ConfigError, match="image_format"):
        RemotePolicy("http://h:1", "m", action_space=SPACE, image_format="gif")
    # Median decoding happens where the model runs: rt2-ros serve --decoding median.
    with pytest.raises(ConfigError, match="decoding: 'median' is chosen where the model runs.*backend 'remote'"):
        PolicyConfig(backend="remote", model="m", decoding="median")


# --------------------------------------------------------------------------- answers

def test_text_answers_parse_as_action_strings():
    """A server without token ids (any OpenAI-compatible one): the text is the action."""
    policy = remote(Recorder(completion("1 128 91 241 5 101 127 200")))
    out = policy.act(IMAGE, "stop")
    assert out.tokens == [1, 128, 91, 241, 5, 101, 127, 200]
    assert out.action["terminate"] is True


@pytest.mark.parametrize("content, words", [
    ("1 128 999 241 5 101 127 200", "999"),
    ("1 128 91", "expected 8 tokens, got 3"),
    ("the robot should wait for me now ok", "not an integer"),
    ("2 128 91 241 5 101 127 200", "token 0 (terminate)"),
])
def test_illegal_action_text_is_a_policy_error_naming_it(content, words):
    policy = remote(Recorder(completion(content)))
    with pytest.raises(PolicyError, match="returned an illegal action") as err:
        policy.act(IMAGE, "pick up the block")
    assert words in str(err.value)


def test_illegal_token_ids_are_a_policy_error_naming_position_and_id():
    ids = SPACE.ids_for_bins(TOKENS)
    ids[3] = 5  # not an action id
    with pytest.raises(PolicyError, match=r"token 3 \(z\): id 5 is not an action token"):
        remote(Recorder(vllm_completion(ids))).act(IMAGE, "pick up the block")
    ids = SPACE.ids_for_bins(TOKENS)
    ids[0] = SPACE.allowed_token_ids[1][2]  # bin 2 is legal for x, not for terminate (0..1)
    with pytest.raises(PolicyError, match=r"token 0 \(terminate\)"):
        remote(Recorder(vllm_completion(ids))).act(IMAGE, "pick up the block")


def test_not_a_chat_completion_is_a_policy_error():
    with pytest.raises(PolicyError, match="not a chat completion"):
        remote(Recorder({"choices": []})).act(IMAGE, "pick up the block")
    not_json = httpx.Response(200, content=b"<html>proxy error</html>")
    with pytest.raises(PolicyError, match="not JSON"):
        remote(Recorder(not_json)).act(IMAGE, "pick up the block")


def test_chain_of_thought_sends_no_allowed_ids_and_keeps_the_plan():
    handler = Recorder(completion("Plan: pick the block Action: 0 128 91 241 5 101 127 200"))
    out = remote(handler, chain_of_thought=True, max_plan_tokens=16).act(IMAGE, "tidy up")
    body = handler.body()
    assert "allowed_token_ids" not in body  # vLLM would forbid the plan's words
    assert body["max_tokens"] > 16 + 8
    assert out.plan == "pick the block" and out.tokens == TOKENS


def test_a_hand_state_is_not_sent_and_the_first_call_says_so(caplog):
    from rt2_ros.policy.base import HandState

    handler = Recorder(completion("Plan: height 3 closed 0 Action: 0 128 91 241 5 101 127 200"))
    policy = remote(handler, chain_of_thought=True, max_plan_tokens=16)
    with caplog.at_level("WARNING", logger="rt2_ros.policy.remote"):
        first = policy.act(IMAGE, "tidy up", HandState(0.12, 1.0))
        policy.act(IMAGE, "tidy up", HandState(0.12, 1.0))
    assert first.plan == "height 3 closed 0" and first.tokens == TOKENS
    assert "hand" not in json.dumps(handler.body())
    warned = [r.getMessage() for r in caplog.records if "hand state is not sent" in r.getMessage()]
    assert len(warned) == 1, warned


# --------------------------------------------------------------------------- HTTP failures

def test_auth_failures_are_not_retried_and_name_the_variable(monkeypatch):
    slept = no_sleep(monkeypatch)
    refused = httpx.Response(401, json={"error": {"message": "wrong API key", "type":
                                                  "authentication_error", "code": None}})
    handler = Recorder(refused)
    policy = remote(handler, api_key="bad", api_key_env="FLEET_KEY")
    with pytest.raises(PolicyError, match=r"refused the key \(401\): wrong API key; .*\$FLEET_KEY"):
        policy.act(IMAGE, "pick up the block")
    assert len(handler.requests) == 1 and slept == []


def test_other_4xx_are_not_retried():
    handler = Recorder(httpx.Response(400, json={"error": {"message": "max_tokens: too small"}}))
    with pytest.raises(PolicyError, match=r"rejected the request \(400\): max_tokens: too small"):
        remote(handler).act(IMAGE, "pick up the block")
    assert len(handler.requests) == 1


def test_5xx_and_429_are_retried_with_backoff_then_reported(monkeypatch):
    slept = no_sleep(monkeypatch)
    handler = Recorder(httpx.Response(503, json={"error": {"message": "server busy"}}))
    with pytest.raises(PolicyError, match=r"failed \(503\): server busy \(after 3 attempts\)"):
        remote(handler, retries=2).act(IMAGE, "pick up the block")
    assert len(handler.requests) == 3 and slept == [0.2, 0.4]
    slept.clear()
    limited = httpx.Response(429, headers={"Retry-After": "1.5"}, json={"error": "slow down"})
    handler = Recorder(limited, limited, vllm_completion(SPACE.ids_for_bins(TOKENS)))
    assert remote(handler).act(IMAGE, "pick up the block").tokens == TOKENS
    assert slept == [1.5, 1.5]


def test_a_transient_connection_error_is_retried(monkeypatch):
    no_sleep(monkeypatch)
    handler = Recorder(httpx.ConnectError("connection refused"),
                       vllm_completion(SPACE.ids_for_bins(TOKENS)))
    assert remote(handler).act(IMAGE, "pick up the block").tokens == TOKENS
    assert len(handler.requests) == 2


# --------------------------------------------------------------------------- action space

def rt2_server_handler(space_json: dict, seen: list | None = None):
    """An rt2-ros serve stand-in: /v1/models, /v1/rt2/action_space and completions."""
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served"}]})
        if request.url.path == "/v1/rt2/action_space":
            return httpx.Response(200, json=space_json)
        return httpx.Response(200, json=vllm_completion(SPACE.ids_for_bins(TOKENS)))
    return handle


def test_action_space_and_model_name_are_fetched_from_an_rt2_server():
    paths: list[str] = []
    handle = rt2_server_handler({"model": "served", **SPACE.to_json()}, paths)
    policy = RemotePolicy("http://h:1/v1", "", transport=httpx.MockTransport(handle))
    out = policy.act(IMAGE, "pick up the block")
    assert out.tokens == TOKENS and policy.model == "served"
    assert policy.embodiment.to_dict() == EMBODIMENT.to_dict()
    policy.act(IMAGE, "pick up the block")
    assert paths.count("/v1/rt2/action_space") == 1 and paths.count("/v1/models") == 1
    assert paths.count("/v1/chat/completions") == 2


def test_an_embodiment_mismatch_with_the_server_is_refused():
    handle = rt2_server_handler(SPACE.to_json())
    policy = RemotePolicy("http://h:1", "m", embodiment=load_embodiment("openvla_bridge"),
                          transport=httpx.MockTransport(handle))
    with pytest.raises(PolicyError, match="embodiment mismatch"):
        policy.act(IMAGE, "pick up the block")
    other = ActionSpace.from_scheme(LastScheme(1000), EMBODIMENT.with_statistics(
        {"x": (-0.01, 0.01)}))
    with pytest.raises(PolicyError, match="dim 'x' differs"):
        RemotePolicy("http://h:1", "m", embodiment=EMBODIMENT, action_space=other)


def test_a_server_without_the_extension_gets_a_hint():
    def handle(request):
        return httpx.Response(404, json={"detail": "Not Found"})
    policy = RemotePolicy("http://h:1", "m", transport=httpx.MockTransport(handle))
    with pytest.raises(PolicyError, match="not rt2-ros serve.*tokenizer directory"):
        policy.act(IMAGE, "pick up the block")


def test_action_space_from_a_local_checkpoint_matches_the_served_model(tiny_paligemma_dir,
                                                                       monkeypatch):
    from rt2_ros.policy.profiles import resolve_action_setup
    from transformers import AutoTokenizer

    space = action_space_from_checkpoint(tiny_paligemma_dir)
    setup = resolve_action_setup(AutoTokenizer.from_pretrained(str(tiny_paligemma_dir)),
                                 checkpoint_dir=tiny_paligemma_dir)
    assert space.scheme == "integer"
    assert [list(ids) for ids in space.allowed_token_ids] == setup.scheme.allowed_ids(
        setup.embodiment)
    # from_config uses it when model is a local directory: no request needed for the ids
    cfg = PolicyConfig(backend="remote", model=str(tiny_paligemma_dir),
                       server_url="http://127.0.0.1:9")
    policy = RemotePolicy.from_config(cfg)
    assert policy.action_space().to_json() == space.to_json()
    policy.close()


# --------------------------------------------------------------------------- real sockets

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_killed_server_fails_fast_with_cannot_connect():
    port = free_port()  # bound then closed: nothing listens there
    policy = RemotePolicy(f"http://127.0.0.1:{port}", "m", action_space=SPACE, retries=2,
                          connect_timeout_s=1.0, read_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(PolicyError) as err:
        policy.act(IMAGE, "pick up the block")
    elapsed = time.monotonic() - started
    assert str(err.value).startswith(f"cannot connect to http://127.0.0.1:{port}: ")
    assert "after 3 attempts" in str(err.value)
    assert 0.6 <= elapsed < policy.worst_case_seconds()  # two backoffs (0.2 + 0.4 s), no more
    policy.close()


def test_a_hung_server_fails_within_the_read_timeout():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    port = listener.getsockname()[1]
    policy = RemotePolicy(f"http://127.0.0.1:{port}", "m", action_space=SPACE, retries=2,
                          connect_timeout_s=1.0, read_timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(PolicyError, match=rf"no answer from http://127\.0\.0\.1:{port} "
                                              r"within 0\.5 s"):
            policy.act(IMAGE, "pick up the block")
        elapsed = time.monotonic() - started
    finally:
        policy.close()
        listener.close()
    # a read timeout is not retried: a late action would be stale anyway
    assert 0.5 <= elapsed < 0.5 + 1.0
    assert elapsed < policy.worst_case_seconds()
