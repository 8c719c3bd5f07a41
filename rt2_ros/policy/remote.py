"""The ``remote`` backend: an OpenAI-compatible chat-completions client.

Each :meth:`RemotePolicy.act` sends one request to
``POST {server_url}/v1/chat/completions``: the image as a base64 data URL,
the profile's robot prompt, ``temperature: 0``, ``max_tokens`` = the number
of action tokens and ``allowed_token_ids`` = every action token id (vLLM's
extension).  The server may be vLLM (a fleet) or ``rt2-ros serve`` (one GPU
host).  The answer is decoded strictly: anything that is not a legal action
raises :class:`PolicyError` naming what came back.

The action token ids (what ``allowed_token_ids`` holds, and how generated
ids map back to bins) come from, in order:

1. an :class:`ActionSpace` given to the constructor — built from a local
   checkpoint/tokenizer directory (:func:`action_space_from_checkpoint`,
   what :meth:`RemotePolicy.from_config` does when ``model`` is a local
   directory) or from a scheme that needs no tokenizer
   (``ActionSpace.from_scheme(LastScheme(vocab_size), embodiment)``);
2. otherwise the server's ``GET /v1/rt2/action_space`` (``rt2-ros serve``
   only), fetched on first use and cached.

Generated tokens are read back as ids when the answer carries them (the
``rt2`` extension's ``token_ids``, or vLLM's ``logprobs`` with
``return_tokens_as_token_ids``), else by parsing the text as an action string.

Failures are one-line PolicyErrors: ``cannot connect to http://...: ...``
(nothing listening, after retries), ``no answer from http://... within N s``
(slow server, not retried: a late action is a stale action), ``... refused
the key`` (401/403), ``... rejected the request (4xx): ...``, ``... failed
(5xx)`` after retries, ``... returned an illegal action: <parse error>``.
Connection errors, 429 and 5xx are retried ``retries`` times with
exponential backoff (honouring ``Retry-After``); other 4xx never.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from rt2_ros.action_language import (ActionLanguageError, build_prompt, load_embodiment,
                                     parse_model_output)
from rt2_ros.errors import ConfigError, PolicyError
from rt2_ros.policy.base import HandState, Policy, PolicyOutput, check_image, check_instruction
from rt2_ros.policy.openai_protocol import (ActionSpace, chat_request_body, completion_text,
                                            completion_token_ids, image_data_url)

_LOG = logging.getLogger(__name__)

__all__ = ["RemotePolicy", "action_space_from_checkpoint", "read_api_key"]

# Backoff before retry n (1-based): BACKOFF_S * 2**(n-1), at most MAX_BACKOFF_S.
BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
# Chain of thought: the plan's words, the "Plan:"/"Action:" markers and the
# separators between action numbers all cost tokens beyond the action itself.
_COT_MARKER_TOKENS = 8
_ERROR_TEXT_CHARS = 300


def read_api_key(env_name: str) -> str | None:
    """Return the bearer token from environment variable ``env_name`` ("" -> None: no auth).

    Raises ConfigError naming the variable when it is configured but unset or empty.
    """
    if not env_name:
        return None
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise ConfigError(f"api_key_env: environment variable {env_name} is not set or empty "
                          f"(it should hold the server's API key)")
    return value


def action_space_from_checkpoint(checkpoint_dir: str | Path, *, profile: str = "rt2",
                                 embodiment: str = "", unnorm_key: str = "") -> ActionSpace:
    """Compute the action space of a local checkpoint (or tokenizer) directory.

    Uses the directory's tokenizer and ``rt2_ros.json`` exactly as the
    ``transformers`` backend does (:func:`rt2_ros.policy.profiles.resolve_action_setup`),
    so a robot talking to vLLM gets the same ids the model was trained with.
    Only the tokenizer is loaded, never the weights.
    """
    from transformers import AutoTokenizer

    from rt2_ros.policy.profiles import resolve_action_setup

    path = Path(checkpoint_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot load a tokenizer from {str(path)!r}: {exc}") from None
    setup = resolve_action_setup(tokenizer, checkpoint_dir=path, profile=profile,
                                 embodiment=embodiment, unnorm_key=unnorm_key)
    return ActionSpace.from_scheme(setup.scheme, setup.embodiment)


class RemotePolicy(Policy):
    """Actions from an OpenAI-compatible server (vLLM or ``rt2-ros serve``).

    ``model`` is the server's model name ("" asks ``GET /v1/models`` and takes
    its only model).  ``embodiment`` (optional) is what this robot expects:
    the model's embodiment must match it exactly, statistics included, or
    every act fails; None adopts the model's.  ``action_space`` (optional)
    gives the action token ids; None fetches them from an rt2-ros server.
    ``transport`` replaces the network (tests).
    """

    name = "remote"

    def __init__(self, server_url: str, model: str = "", *, profile: str = "rt2",
                 embodiment: Any = None, action_space: ActionSpace | None = None,
                 api_key: str | None = None, api_key_env: str = "",
                 image_format: str = "jpeg", jpeg_quality: int = 90,
                 connect_timeout_s: float = 2.0, read_timeout_s: float = 10.0, retries: int = 2,
                 chain_of_thought: bool = False, max_plan_tokens: int = 32,
                 transport: httpx.BaseTransport | None = None) -> None:
        url = server_url.rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]  # accept OpenAI-style base URLs too
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"server_url: expected http://host:port or https://..., got "
                              f"{server_url!r}")
        if image_format not in ("jpeg", "png"):
            raise ConfigError(f"image_format: expected jpeg or png, got {image_format!r}")
        if retries < 0:
            raise ConfigError(f"retries: expected an integer >= 0, got {retries!r}")
        build_prompt("check", profile)  # refuses an unknown profile now, not at the first act
        self.server_url = url
        self.model = model
        self.profile = profile
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.retries = int(retries)
        self.chain_of_thought = chain_of_thought
        self.max_plan_tokens = max_plan_tokens
        self._api_key_env = api_key_env
        self._expected_embodiment = embodiment
        self._space: ActionSpace | None = None
        self._hand_warned = False
        self._lock = threading.Lock()
        if action_space is not None:
            self._space = self._checked_space(action_space, "the given action space")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client for every request: connections are kept alive between actions.
        self._client = httpx.Client(
            headers=headers, transport=transport,
            timeout=httpx.Timeout(connect=self.connect_timeout_s, read=self.read_timeout_s,
                                  write=self.read_timeout_s, pool=self.connect_timeout_s))

    @classmethod
    def from_config(cls, cfg: Any) -> "RemotePolicy":
        """Build from a :class:`~rt2_ros.policy.config.PolicyConfig`.

        ``cfg.model`` is the server's model name; ``cfg.tokenizer`` (or
        ``cfg.model`` when it is also a local directory) gives the action ids (serve it under that same
        name, e.g. ``vllm serve <dir>`` or ``--served-model-name <dir>``);
        otherwise the ids come from the server (rt2-ros serve).
        ``cfg.embodiment`` "" adopts the model's embodiment.
        """
        api_key = read_api_key(cfg.api_key_env)
        embodiment = None
        if cfg.embodiment:
            try:
                embodiment = load_embodiment(cfg.embodiment)
            except ActionLanguageError as exc:
                raise ConfigError(f"embodiment: {exc}") from None
        space = None
        if cfg.tokenizer and not Path(cfg.tokenizer).is_dir():
            raise ConfigError(f"tokenizer: expected a checkpoint or tokenizer directory, "
                              f"got {cfg.tokenizer!r}")
        local_dir = cfg.tokenizer or (cfg.model if cfg.model and Path(cfg.model).is_dir() else "")
        if local_dir:
            space = action_space_from_checkpoint(local_dir, profile=cfg.profile,
                                                 embodiment=cfg.embodiment,
                                                 unnorm_key=cfg.unnorm_key)
        return cls(cfg.server_url, cfg.model, profile=cfg.profile, embodiment=embodiment,
                   action_space=space, api_key=api_key, api_key_env=cfg.api_key_env,
                   image_format=cfg.image_format, jpeg_quality=cfg.jpeg_quality,
                   connect_timeout_s=cfg.connect_timeout_s, read_timeout_s=cfg.read_timeout_s,
                   retries=cfg.retries, chain_of_thought=cfg.chain_of_thought,
                   max_plan_tokens=cfg.max_plan_tokens)

    # ------------------------------------------------------------------ public

    @property
    def embodiment(self) -> Any:
        """The embodiment actions are decoded with (fetches the action space if needed)."""
        return self.action_space().embodiment

    def worst_case_seconds(self) -> float:
        """Upper bound of one failing request: every attempt times out, plus the backoffs.

        (Each timeout applies per network operation; a server that trickles
        bytes slower than one per ``read_timeout_s`` could stretch a read.)
        """
        attempts = self.retries + 1
        backoff = sum(self._backoff(n, None) for n in range(1, attempts))
        return attempts * (self.connect_timeout_s + self.read_timeout_s) + backoff

    def action_space(self) -> ActionSpace:
        """Return the action space, fetching ``GET /v1/rt2/action_space`` once if none was given."""
        with self._lock:
            if self._space is None:
                model = self._model_name()
                data = self._request("GET", "/v1/rt2/action_space", None, not_found_hint=(
                    "the server has no /v1/rt2/action_space (it is not rt2-ros serve): give the "
                    "remote backend the checkpoint's tokenizer directory as model so it can "
                    "compute the action token ids"))
                if isinstance(data, dict) and data.get("model") not in (None, model):
                    raise PolicyError(f"{self.server_url} serves model {data.get('model')!r}, "
                                      f"this policy asks for {model!r}")
                try:
                    space = ActionSpace.from_json(data)
                except ValueError as exc:
                    raise PolicyError(f"{self.server_url}/v1/rt2/action_space: {exc}") from None
                self._space = self._checked_space(space, f"{self.server_url}")
            return self._space

    def act(self, image: np.ndarray, instruction: str, hand: HandState | None = None) -> PolicyOutput:
        """Ask the server for the action; raise PolicyError unless a legal one comes back.

        ``hand`` is not sent (the chat protocol has no field for it): a served checkpoint that
        plans the hand's state writes it from the image, and the first call given one says so.
        """
        if hand is not None and not self._hand_warned:
            self._hand_warned = True
            _LOG.warning("remote backend: the hand state is not sent to the server; a checkpoint that plans "
                         "the hand's height and fingers reads them off the image there")
        started = time.perf_counter()
        image = check_image(image)
        instruction = check_instruction(instruction)
        space = self.action_space()
        prompt = build_prompt(instruction, self.profile)
        url = image_data_url(image, self.image_format, self.jpeg_quality)
        if self.chain_of_thought:
            # vLLM applies allowed_token_ids to every step, which would forbid the plan's words.
            body = chat_request_body(self._model_name(), url, prompt,
                                     max_tokens=self.max_plan_tokens + 2 * space.num_tokens
                                     + _COT_MARKER_TOKENS)
        else:
            body = chat_request_body(self._model_name(), url, prompt, max_tokens=space.num_tokens,
                                     allowed_token_ids=space.union(), want_token_ids=True)
        encoded = time.perf_counter()
        response = self._request("POST", "/v1/chat/completions", body)
        answered = time.perf_counter()
        output = self._decode(response, space)
        done = time.perf_counter()
        output.timings = {"preprocess": (encoded - started) * 1000.0,
                          "request": (answered - encoded) * 1000.0,
                          "parse": (done - answered) * 1000.0,
                          "total": (done - started) * 1000.0}
        rt2 = response.get("rt2")
        server = rt2.get("timings_ms") if isinstance(rt2, dict) else None
        if isinstance(server, dict) and isinstance(server.get("total"), (int, float)):
            output.timings["server"] = float(server["total"])
        return output

    def answer(self, image: np.ndarray, question: str, max_tokens: int = 32) -> str:
        """Free-text answer (VQA) from the same server and weights, unconstrained."""
        image = check_image(image)
        question = check_instruction(question)
        body = chat_request_body(self._model_name(), image_data_url(image, self.image_format,
                                                                    self.jpeg_quality),
                                 question, max_tokens=max_tokens)
        response = self._request("POST", "/v1/chat/completions", body)
        try:
            return completion_text(response)
        except ValueError as exc:
            raise PolicyError(f"{self.server_url} answered something that is not a chat "
                              f"completion: {exc}") from None

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # ------------------------------------------------------------------ internals

    def _checked_space(self, space: ActionSpace, source: str) -> ActionSpace:
        if self._expected_embodiment is not None:
            try:
                space.check_embodiment(self._expected_embodiment)
            except ValueError as exc:
                raise PolicyError(f"{source}: embodiment mismatch: {exc}") from None
        return space

    def _model_name(self) -> str:
        if not self.model:
            data = self._request("GET", "/v1/models", None)
            ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)] \
                if isinstance(data, dict) else []
            if len(ids) != 1 or not isinstance(ids[0], str):
                raise PolicyError(f"{self.server_url} serves {len(ids)} models {ids}; set model "
                                  f"to one of them")
            self.model = ids[0]
        return self.model

    def _decode(self, response: Any, space: ActionSpace) -> PolicyOutput:
        try:
            text = completion_text(response)
            token_ids = completion_token_ids(response)
        except ValueError as exc:
            raise PolicyError(f"{self.server_url} answered something that is not a chat "
                              f"completion: {exc}") from None
        embodiment = space.embodiment
        rt2 = response.get("rt2") if isinstance(response.get("rt2"), dict) else {}
        from_extension = "token_ids" in rt2
        # vLLM's ids include the plan's tokens under chain of thought: only the text parses then.
        if token_ids is not None and (from_extension or not self.chain_of_thought):
            try:
                bins = space.bins_for_ids(token_ids)
                action = embodiment.decode(bins)
            except (ValueError, ActionLanguageError) as exc:
                raise PolicyError(f"{self.server_url} returned an illegal action: {exc} "
                                  f"(text {text[:_ERROR_TEXT_CHARS]!r})") from None
            plan = rt2.get("plan", "") if isinstance(rt2.get("plan", ""), str) else ""
            return PolicyOutput(tokens=bins, action=action, plan=plan, text=text)
        try:
            parsed = parse_model_output(text, embodiment)
        except ActionLanguageError as exc:
            raise PolicyError(f"{self.server_url} returned an illegal action: {exc}") from None
        return PolicyOutput(tokens=parsed.tokens, action=parsed.action, plan=parsed.plan,
                            text=text)

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_BACKOFF_S)
        return min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S)

    def _request(self, method: str, path: str, body: Any, not_found_hint: str = "") -> Any:
        """One request with bounded retries; the decoded JSON answer or PolicyError."""
        attempts = self.retries + 1
        failure = ""
        retry_after: float | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._backoff(attempt, retry_after))
            retry_after = None
            try:
                response = self._client.request(method, self.server_url + path, json=body)
            except httpx.ConnectTimeout:
                failure = (f"cannot connect to {self.server_url}: no connection within "
                           f"{self.connect_timeout_s:g} s")
                continue
            except httpx.ConnectError as exc:
                failure = f"cannot connect to {self.server_url}: {exc}"
                continue
            except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
                raise PolicyError(f"no answer from {self.server_url} within "
                                  f"{self.read_timeout_s:g} s") from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # e.g. a kept-alive connection the server closed, or a server that died mid-answer
                failure = f"connection to {self.server_url} broke: {exc}"
                continue
            except httpx.HTTPError as exc:
                raise PolicyError(f"request to {self.server_url} failed: {exc}") from None
            status = response.status_code
            if status == 429 or status >= 500:
                failure = (f"{self.server_url} failed ({status}): "
                           f"{self._error_message(response)}")
                retry_after = self._retry_after(response)
                continue
            if status in (401, 403):
                hint = (f"check the key in ${self._api_key_env}" if self._api_key_env
                        else "set api_key_env to the variable holding the server's key")
                raise PolicyError(f"{self.server_url} refused the key ({status}): "
                                  f"{self._error_message(response)}; {hint}")
            if status == 404 and not_found_hint:
                raise PolicyError(f"{self.server_url}{path}: 404: {not_found_hint}")
            if status >= 400:
                raise PolicyError(f"{self.server_url} rejected the request ({status}): "
                                  f"{self._error_message(response)}")
            try:
                return response.json()
            except ValueError:
                raise PolicyError(f"{self.server_url}{path} answered {status} with something that "
                                  f"is not JSON: {response.text[:_ERROR_TEXT_CHARS]!r}") from None
        raise PolicyError(f"{failure} (after {attempts} attempt{'s' if attempts > 1 else ''})")

    @staticmethod
    def _error_message(response: httpx.Response) -> str:
        try:
            error = response.json().get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return error["message"][:_ERROR_TEXT_CHARS]
            if isinstance(error, str):
                return error[:_ERROR_TEXT_CHARS]
        except (ValueError, AttributeError):
            pass
        return response.text[:_ERROR_TEXT_CHARS] or response.reason_phrase

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after", "")
        try:
            return float(value)
        except ValueError:
            return None  # absent, or an HTTP date: use the normal backoff
