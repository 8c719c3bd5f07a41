"""rt2-ros serve: the OpenAI-compatible server, its batching worker and its limits.

Servers run in-process on 127.0.0.1 with an ephemeral port and are always
stopped.  Most tests use a fake model (deterministic, instant, counts batch
sizes); the tiny random checkpoint runs the real TransformersPolicy end to end.
"""
from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from rt2_ros.action_language import LastScheme, build_prompt, load_embodiment
from rt2_ros.errors import ConfigError, PolicyError
from rt2_ros.policy.base import PolicyOutput
from rt2_ros.policy.batching import BatchWorker, QueueFullError
from rt2_ros.policy.openai_protocol import ActionSpace, chat_request_body, image_data_url
from rt2_ros.policy.remote import RemotePolicy
from rt2_ros.policy.server import RunningServer, ServerSettings, create_app, prompt_kind

MODEL = "fake-vla"
KEY = "s3cret-key"


class FakeVla:
    """A model with the server's interface: the action's bins come from the image's mean."""

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.embodiment = load_embodiment("rt2_arm")
        self.scheme = LastScheme(vocab_size=1000)
        self.tokenizer = None
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.batch_sizes: list[int] = []
        self.gate: threading.Event | None = None

    @staticmethod
    def expected_tokens(image: np.ndarray, instruction: str) -> list[int]:
        level = int(image.mean().round()) % 256
        return [int("stop" in instruction)] + [level] * 7

    def act_batch(self, images, instructions):
        self.batch_sizes.append(len(images))
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        outputs = []
        for image, instruction in zip(images, instructions):
            if self.fail_on and self.fail_on in instruction:
                raise RuntimeError(f"cannot handle {instruction!r}")
            tokens = self.expected_tokens(image, instruction)
            outputs.append(PolicyOutput(tokens=tokens, action=self.embodiment.decode(tokens),
                                        text=" ".join(map(str, tokens)),
                                        timings={"prefill": 1.0, "decode": 2.0, "total": 3.0}))
        return outputs

    def answer(self, image, question, max_new_tokens):
        return f"a grey image ({max_new_tokens} tokens at most)"


def grey(level: int, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), level, dtype=np.uint8)


@pytest.fixture
def serve():
    """Start servers on demand; stop every one at the end of the test."""
    running = []

    def start(model=None, **settings) -> tuple[RunningServer, object]:
        model = model or FakeVla()
        settings.setdefault("model_name", MODEL)
        server = RunningServer(create_app(model, ServerSettings(**settings)))
        running.append(server)
        return server, model

    yield start
    for server in running:
        server.stop()


def chat_body(image: np.ndarray | None = None, prompt: str | None = None, **extra) -> dict:
    image = grey(100) if image is None else image
    prompt = build_prompt("pick up the block") if prompt is None else prompt
    body = chat_request_body(MODEL, image_data_url(image), prompt, max_tokens=8)
    body.update(extra)
    return body


def post(server: RunningServer, body=None, *, content: bytes | None = None, key: str | None = KEY,
         timeout: float = 10.0) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = server.url + "/v1/chat/completions"
    if content is not None:
        return httpx.post(url, content=content, headers={**headers, "Content-Type":
                                                         "application/json"}, timeout=timeout)
    return httpx.post(url, json=body, headers=headers, timeout=timeout)


def assert_error(response: httpx.Response, status: int, code: str | None = None,
                 words: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    assert words.lower() in error["message"].lower(), error
    return error


# --------------------------------------------------------------------------- round trips

def test_remote_client_gets_the_models_actions_through_the_server(serve):
    server, model = serve(api_key=KEY)
    with RemotePolicy(server.url, MODEL, api_key=KEY) as policy:
        for level, instruction in ((100, "pick up the block"), (7, "stop now")):
            out = policy.act(grey(level), instruction)
            expected = FakeVla.expected_tokens(grey(level), instruction)
            assert out.tokens == expected
            assert out.action == model.embodiment.decode(expected)
            assert out.timings["total"] > 0 and "server" in out.timings
    # the action space came from the server, with the model's ids
    assert policy.action_space().allowed_token_ids[1][0] == 999


def test_response_is_an_openai_chat_completion_with_the_rt2_extension(serve):
    server, model = serve(api_key=KEY)
    body = post(server, chat_body(grey(42))).json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "0 42 42 42 42 42 42 42"
    assert body["usage"]["completion_tokens"] == 8
    rt2 = body["rt2"]
    assert rt2["kind"] == "action" and rt2["tokens"] == [0] + [42] * 7
    assert rt2["token_ids"] == [999] + [1000 - 1 - 42] * 7
    assert rt2["action"]["terminate"] is False
    assert rt2["batch_size"] == 1
    assert {"decode_image", "queue", "model", "prefill", "decode", "total"} <= set(rt2["timings_ms"])


def test_models_action_space_and_health_endpoints(serve):
    server, model = serve(api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    models = httpx.get(server.url + "/v1/models", headers=auth).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    space = ActionSpace.from_json(httpx.get(server.url + "/v1/rt2/action_space", headers=auth).json())
    assert space.to_json() == ActionSpace.from_scheme(model.scheme, model.embodiment).to_json()
    health = httpx.get(server.url + "/health").json()  # no key needed
    assert health["status"] == "ok" and health["model"] == MODEL


def test_vqa_prompt_gets_free_text(serve):
    server, _ = serve()
    body = post(server, chat_body(prompt="What colour is the image?", max_tokens=12), key=None)
    assert body.status_code == 200, body.text
    data = body.json()
    assert data["choices"][0]["message"]["content"] == "a grey image (12 tokens at most)"
    assert data["rt2"]["kind"] == "answer"
    with RemotePolicy(server.url, MODEL) as policy:
        assert policy.answer(grey(3), "what is this?").startswith("a grey image")


def test_four_concurrent_robots_share_a_forward_pass(serve):
    server, model = serve(max_batch=8, max_wait_ms=300, model=FakeVla(delay_s=0.05))
    policies = [RemotePolicy(server.url, MODEL, read_timeout_s=20) for _ in range(4)]
    for policy in policies:
        policy.action_space()  # fetch before the race so the four acts start together
    barrier = threading.Barrier(4)

    def robot(index: int) -> PolicyOutput:
        barrier.wait()
        return policies[index].act(grey(10 * index), f"task {index}")

    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(robot, range(4)))
    for index, out in enumerate(outputs):
        assert out.tokens == FakeVla.expected_tokens(grey(10 * index), f"task {index}")
    health = httpx.get(server.url + "/health").json()
    assert health["max_batch_size"] > 1, health
    assert health["requests"] == 4 and health["batches"] < 4
    assert max(model.batch_sizes) > 1
    for policy in policies:
        policy.close()


def test_a_failing_request_does_not_fail_its_batch_mates(serve):
    server, model = serve(max_wait_ms=300, model=FakeVla(fail_on="explode"))
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, server, chat_body(grey(5), build_prompt(text)), key=None)
                   for text in ("explode now", "move left", "move right")]
        responses = [f.result() for f in futures]
    assert_error(responses[0], 500, "model_error", "cannot handle")
    assert [r.status_code for r in responses[1:]] == [200, 200]


# --------------------------------------------------------------------------- auth

def test_auth_refuses_a_missing_or_wrong_key_and_accepts_the_right_one(serve):
    server, _ = serve(api_key=KEY)
    missing = assert_error(post(server, chat_body(), key=None), 401, "missing_api_key")
    assert missing["type"] == "authentication_error"
    assert_error(post(server, chat_body(), key="wrong"), 401, "invalid_api_key")
    assert_error(post(server, chat_body(), key=KEY + "x"), 401, "invalid_api_key")
    no_key = httpx.get(server.url + "/v1/models")
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert post(server, chat_body(), key=KEY).status_code == 200
    with RemotePolicy(server.url, MODEL, api_key="wrong", api_key_env="RT2_TEST_KEY") as bad:
        with pytest.raises(PolicyError, match=r"refused the key \(401\).*RT2_TEST_KEY"):
            bad.act(grey(1), "pick up the block")


# --------------------------------------------------------------------------- malformed input

def _image_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def _with_url(url: str) -> dict:
    body = chat_body()
    body["messages"][0]["content"][0]["image_url"]["url"] = url
    return body


MALFORMED = {
    "bad-json": (lambda: {"content": b"{not json"}, 400, "invalid_json", "invalid json"),
    "not-an-object": (lambda: {"content": b"[1, 2]"}, 400, "invalid_body", "json object"),
    "no-model-field": (lambda: {"body": {"messages": []}}, 400, "invalid_request", "model"),
    "wrong-model": (lambda: {"body": {**chat_body(), "model": "other"}}, 404, "model_not_found",
                    "other"),
    "text-only-content": (lambda: {"body": {**chat_body(), "messages": [
        {"role": "user", "content": "hi"}]}}, 400, "missing_image", "no image"),
    "no-image-part": (lambda: {"body": {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}]}]}}, 400, "missing_image", "image_url"),
    "http-url": (lambda: {"body": _with_url("https://example.com/cat.jpg")}, 400,
                 "invalid_image_url", "data url"),
    "bad-base64": (lambda: {"body": _with_url("data:image/png;base64,@@@not-base64@@@")}, 400,
                   "invalid_base64", "base64"),
    "not-an-image": (lambda: {"body": _with_url(
        "data:image/png;base64," + base64.b64encode(b"definitely not an image").decode())},
        400, "invalid_image", "not a decodable"),
    "text-media-type": (lambda: {"body": _with_url("data:text/plain;base64,aGVsbG8=")}, 400,
                        "invalid_image_url", "image/"),
    "stream": (lambda: {"body": {**chat_body(), "stream": True}}, 400, None, "stream"),
    "temperature": (lambda: {"body": {**chat_body(), "temperature": 0.7}}, 400, None,
                    "greedily"),
    "too-few-tokens": (lambda: {"body": {**chat_body(), "max_tokens": 3}}, 400, None,
                       "needs 8 tokens"),
    "foreign-action-ids": (lambda: {"body": {**chat_body(), "allowed_token_ids": [1, 2, 3]}},
                           400, "wrong_action_ids", "action_space"),
    "other-profile-prompt": (lambda: {"body": chat_body(
        prompt=build_prompt("pick up the block", "openvla"))}, 400, "wrong_profile", "openvla"),
    "answer-too-long": (lambda: {"body": chat_body(prompt="describe", max_tokens=100000)}, 400,
                        None, "at most 256"),
}


@pytest.fixture(scope="module")
def shared_server():
    model = FakeVla()
    with RunningServer(create_app(model, ServerSettings(model_name=MODEL))) as server:
        yield server, model


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_a_4xx_json_error(shared_server, case):
    server, model = shared_server
    make_request, status, code, words = MALFORMED[case]
    calls_before = len(model.batch_sizes)
    response = post(server, key=None, **make_request())
    assert_error(response, status, code, words)
    assert len(model.batch_sizes) == calls_before  # nothing reached the model


def test_oversized_requests_are_refused_with_413(serve):
    server, model = serve(max_body_bytes=64 * 1024, max_image_pixels=64 * 64)
    padding = {"user": "x" * 100_000}  # a body over the limit (read, then refused)
    assert_error(post(server, {**chat_body(), **padding}, key=None), 413, "body_too_large")
    huge = b"{" + b" " * 400_000 + b"}"  # far over: cut off without reading it all
    response = post(server, content=huge, key=None)
    assert response.status_code == 413
    big_image = _with_url("data:image/png;base64,"
                          + base64.b64encode(_image_bytes(grey(1, size=65))).decode())
    assert_error(post(server, big_image, key=None), 413, "image_too_large", "pixels")
    assert model.batch_sizes == []
    # the server is still fine
    assert post(server, chat_body(), key=None).status_code == 200


def test_unknown_routes_answer_json_errors(serve):
    server, _ = serve()
    response = httpx.get(server.url + "/v1/embeddings")
    assert_error(response, 404, "404")
    assert_error(httpx.get(server.url + "/v1/chat/completions"), 405)


def test_a_full_queue_answers_503_busy(serve):
    model = FakeVla()
    model.gate = threading.Event()
    server, _ = serve(model=model, max_batch=1, max_queue=1, max_wait_ms=0)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, server, chat_body(), key=None)  # taken by the worker, held
        deadline = time.monotonic() + 10
        while not model.batch_sizes and time.monotonic() < deadline:
            time.sleep(0.01)
        second = pool.submit(post, server, chat_body(), key=None)  # waits in the queue
        while httpx.get(server.url + "/health").json()["queue_depth"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        busy = post(server, chat_body(), key=None)
        model.gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert_error(busy, 503, "server_busy", "busy")
    assert busy.headers["retry-after"] == "1"


def test_a_stopped_server_gives_the_client_a_connection_error(serve):
    server, _ = serve()
    policy = RemotePolicy(server.url, MODEL, retries=1, connect_timeout_s=1.0)
    policy.act(grey(1), "pick up the block")  # a kept-alive connection now exists
    server.stop()
    started = time.monotonic()
    with pytest.raises(PolicyError, match=r"cannot connect to http://127\.0\.0\.1:\d+"):
        policy.act(grey(1), "pick up the block")
    assert time.monotonic() - started < policy.worst_case_seconds()
    policy.close()


# --------------------------------------------------------------------------- pure parts

def test_prompt_kind_tells_robot_prompts_from_questions():
    assert prompt_kind(build_prompt("open the drawer"), "rt2") == ("act", "open the drawer")
    assert prompt_kind(build_prompt("Open the drawer", "openvla"), "openvla") == \
        ("act", "open the drawer")
    assert prompt_kind("Q: what is on the table? A:", "rt2") == ("answer",
                                                                "Q: what is on the table? A:")


def test_server_settings_are_validated():
    with pytest.raises(ConfigError, match="max_batch"):
        ServerSettings(model_name="m", max_batch=0)
    with pytest.raises(ConfigError, match="profile"):
        ServerSettings(model_name="m", profile="rt3")
    with pytest.raises(ConfigError, match="model_name"):
        ServerSettings(model_name="")


def test_image_data_urls_round_trip_and_limits_are_enforced():
    from rt2_ros.policy.openai_protocol import ApiError, decode_image_data_url

    image = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    png = decode_image_data_url(image_data_url(image, "png"), max_bytes=10**6, max_pixels=120)
    assert np.array_equal(png, image)
    jpeg = decode_image_data_url(image_data_url(image, "jpeg", 95), max_bytes=10**6,
                                 max_pixels=120)
    assert jpeg.shape == image.shape and jpeg.dtype == np.uint8
    with pytest.raises(ApiError, match="pixels") as err:
        decode_image_data_url(image_data_url(image, "png"), max_bytes=10**6, max_pixels=119)
    assert err.value.status == 413
    with pytest.raises(ApiError, match="larger than 50 bytes") as err:
        decode_image_data_url(image_data_url(image, "png"), max_bytes=50, max_pixels=10**6)
    assert err.value.status == 413


def test_action_space_json_is_validated():
    space = ActionSpace.from_scheme(LastScheme(1000), load_embodiment("rt2_arm"))
    data = space.to_json()
    assert ActionSpace.from_json(data).to_json() == data
    assert space.bins_for_ids(space.ids_for_bins([1] + [200] * 7)) == [1] + [200] * 7
    with pytest.raises(ValueError, match="allowed_token_ids"):
        ActionSpace.from_json({**data, "allowed_token_ids": "all"})
    with pytest.raises(ValueError, match=r"position 0 \(terminate\) has 3 token ids"):
        ActionSpace.from_json({**data, "allowed_token_ids": [[1, 2, 3]] + data[
            "allowed_token_ids"][1:]})
    with pytest.raises(ValueError, match="unknown key"):
        ActionSpace.from_json({**data, "embodiment": {**data["embodiment"], "colour": "red"}})


def _echo_worker(**kwargs) -> tuple[BatchWorker, list]:
    seen: list[tuple[str, int]] = []

    def run(kind, payloads):
        seen.append((kind, len(payloads)))
        if "bad" in payloads:
            raise ValueError("bad payload")
        return [p * 2 for p in payloads]

    options = dict(max_batch=3, max_wait_s=0.2, max_queue=16, batchable={"act"})
    options.update(kwargs)
    worker = BatchWorker(run, **options)
    return worker, seen


def test_batch_worker_batches_up_to_max_batch_and_keeps_order():
    worker, seen = _echo_worker()
    futures = [worker.submit("act", i) for i in range(5)]  # queued before the thread starts
    worker.start()
    try:
        results = [f.result(5) for f in futures]
    finally:
        worker.stop()
    assert [r.value for r in results] == [0, 2, 4, 6, 8]
    assert [size for _, size in seen] == [3, 2]
    assert [r.batch_size for r in results] == [3, 3, 3, 2, 2]
    assert worker.stats()["max_batch_size"] == 3


def test_batch_worker_waits_at_most_max_wait_for_company():
    worker, seen = _echo_worker(max_wait_s=0.05)
    worker.start()
    try:
        started = time.monotonic()
        result = worker.submit("act", 1).result(5)
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
    assert result.batch_size == 1 and 0.04 <= elapsed < 2.0


def test_batch_worker_runs_unbatchable_kinds_alone_and_isolates_failures():
    worker, seen = _echo_worker()
    futures = [worker.submit("answer", 1), worker.submit("act", 2), worker.submit("answer", 3),
               worker.submit("act", "bad"), worker.submit("act", 4)]
    worker.start()
    try:
        assert futures[0].result(5).value == 2 and futures[2].result(5).value == 6
        assert futures[1].result(5).value == 4 and futures[4].result(5).value == 8
        with pytest.raises(ValueError, match="bad payload"):
            futures[3].result(5)
    finally:
        worker.stop()
    assert all(size == 1 for kind, size in seen if kind == "answer")
    assert ("act", 3) in seen  # the act batch failed once, then ran one by one
    assert worker.stats()["failed"] == 1


def test_batch_worker_refuses_when_the_queue_is_full():
    worker, _ = _echo_worker(max_queue=2)
    worker.submit("act", 1)
    worker.submit("act", 2)
    with pytest.raises(QueueFullError):
        worker.submit("act", 3)
    worker.stop()


# --------------------------------------------------------------------------- the tiny real model

@pytest.fixture(scope="module")
def tiny_policy(tiny_paligemma_dir):
    from rt2_ros.policy.config import PolicyConfig
    from rt2_ros.policy.transformers_backend import TransformersPolicy

    policy = TransformersPolicy.from_config(PolicyConfig(model=str(tiny_paligemma_dir),
                                                         device="cpu", dtype="float32"))
    yield policy
    policy.close()


@pytest.mark.slow
def test_tiny_model_round_trip_and_batching(serve, tiny_policy, tiny_paligemma_dir):
    server, _ = serve(model=tiny_policy, model_name=str(tiny_paligemma_dir), max_batch=4,
                      max_wait_ms=500)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    # PNG: lossless, so the server sees exactly the image the local model gets
    policies = [RemotePolicy(server.url, str(tiny_paligemma_dir), read_timeout_s=60,
                             image_format="png")
                for _ in range(4)]
    for policy in policies:
        policy.action_space()
    barrier = threading.Barrier(4)

    def robot(index: int) -> PolicyOutput:
        barrier.wait()
        return policies[index].act(images[index], "pick up the red block")

    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(robot, range(4)))
    embodiment = tiny_policy.embodiment
    for out, image in zip(outputs, images):
        assert len(out.tokens) == embodiment.num_tokens
        assert out.action == embodiment.decode(out.tokens)  # legal, decoded strictly
        # the same greedy action as the model computes locally
        assert out.tokens == tiny_policy.act(image, "pick up the red block").tokens
    assert httpx.get(server.url + "/health").json()["max_batch_size"] > 1
    answer = policies[0].answer(images[0], "what is in the image?", max_tokens=5)
    assert isinstance(answer, str)
    for policy in policies:
        policy.close()


@pytest.mark.slow
def test_rt2_ros_serve_command_serves_the_tiny_model(tiny_paligemma_dir):
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "RT2_TEST_SERVE_KEY": KEY,
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "rt2_ros.cli", "serve", "--model", str(tiny_paligemma_dir),
               "--port", "0", "--device", "cpu", "--dtype", "float32",
               "--api-key-env", "RT2_TEST_SERVE_KEY", "--served-model-name", "tiny", "--threads", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()  # the JSON line, printed once it listens
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:") and info["model"] == "tiny"
        assert info["auth"] is True and info["scheme"] == "integer"
        with RemotePolicy(info["url"], "tiny", api_key=KEY, read_timeout_s=60) as policy:
            out = policy.act(grey(120), "pick up the red block")
            assert out.action == policy.embodiment.decode(out.tokens)
        assert httpx.get(info["url"] + "/v1/models").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode in (0, 130), err
    assert "rt2-ros serve: 1 torch intra-op thread(s)" in err, err


def test_rt2_ros_serve_refuses_bad_arguments_with_one_line(monkeypatch, capsys):
    from rt2_ros.cli import main

    monkeypatch.delenv("RT2_UNSET_KEY_VARIABLE", raising=False)
    assert main(["serve", "--model", "/nonexistent", "--api-key-env",
                 "RT2_UNSET_KEY_VARIABLE"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RT2_UNSET_KEY_VARIABLE" in err
    assert main(["serve", "--model", "/nonexistent", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--model", "/nonexistent", "--threads", "-1"]) == 2
    assert "--threads: expected an integer >= 0 (0: torch's default), got -1" in capsys.readouterr().err
