"""The subset of OpenAI's chat-completions protocol that RT-2 policies speak.

Shared by the ``remote`` client (:mod:`rt2_ros.policy.remote`) and the
``rt2-ros serve`` server (:mod:`rt2_ros.policy.server`), so both sides agree
on one wire format:

- request: one ``user`` message whose content is one ``image_url`` part (a
  base64 ``data:`` URL) and one ``text`` part (the prompt), plus ``model``,
  ``max_tokens``, ``temperature: 0`` and vLLM's ``allowed_token_ids``;
- response: a ``chat.completion`` whose message content is the model's text,
  optionally with vLLM's ``logprobs`` tokens as ``token_id:<id>`` and the
  ``rt2`` extension object of ``rt2-ros serve``;
- :class:`ActionSpace`: which vocabulary id stands for which bin at each
  action position (what ``allowed_token_ids`` is built from, and what the
  server publishes at ``GET /v1/rt2/action_space``).

Nothing here is ever unpickled or evaluated: JSON and image decoders only.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ActionSpace", "ApiError", "ChatRequest", "parse_chat_request", "chat_request_body",
    "encode_image", "image_data_url", "decode_image_data_url", "completion_text",
    "completion_token_ids", "error_body", "IMAGE_FORMATS",
]

#: image encodings the client can send and the server accepts (PIL format names)
IMAGE_FORMATS = {"jpeg": "JPEG", "png": "PNG"}
_ACCEPTED_PIL_FORMATS = ["JPEG", "PNG", "WEBP"]
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),(?P<data>.*)\Z",
                       re.DOTALL)
_TOKEN_ID = re.compile(r"token_id:(-?\d+)\Z")


class ApiError(Exception):
    """An error answer of the server: HTTP status + OpenAI-style error object.

    ``type`` follows OpenAI's vocabulary (``invalid_request_error``,
    ``authentication_error``, ``not_found_error``, ``server_error``, ...);
    ``code`` is a short machine-readable reason; ``param`` names the offending
    request field when there is one.
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        """Return the response body ``{"error": {"message", "type", "param", "code"}}``."""
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """Return an OpenAI-style error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --------------------------------------------------------------------------- images

def encode_image(image: np.ndarray, image_format: str = "jpeg", jpeg_quality: int = 90) -> bytes:
    """Return ``image`` (HxWx3 uint8 RGB) encoded as JPEG (at ``jpeg_quality``) or PNG."""
    from PIL import Image

    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {', '.join(IMAGE_FORMATS)}, "
                         f"got {image_format!r}")
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": int(jpeg_quality)} if image_format == "jpeg" else {}
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(
        buffer, format=IMAGE_FORMATS[image_format], **options)
    return buffer.getvalue()


def image_data_url(image: np.ndarray, image_format: str = "jpeg", jpeg_quality: int = 90) -> str:
    """Return ``image`` as a ``data:image/<format>;base64,...`` URL."""
    payload = base64.b64encode(encode_image(image, image_format, jpeg_quality)).decode("ascii")
    return f"data:image/{image_format};base64,{payload}"


def decode_image_data_url(url: str, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Return the HxWx3 uint8 RGB image of a base64 ``data:image/...`` URL.

    Raises :class:`ApiError` (400 for malformed input, 413 for an image over
    ``max_bytes`` encoded bytes or ``max_pixels`` pixels).  Only data URLs are
    accepted: the server never fetches a URL a client names.  The pixel count
    is checked from the header before any pixel is decoded (decompression bombs).
    """
    from PIL import Image, UnidentifiedImageError

    param = "messages[0].content.image_url.url"
    match = _DATA_URL.match(url)
    if match is None:
        raise ApiError(400, f"image_url: expected a base64 data URL (data:image/...;base64,...), "
                       f"got {_preview(url)}", code="invalid_image_url", param=param)
    mime = (match.group("mime") or "").lower()
    if not mime.startswith("image/"):
        raise ApiError(400, f"image_url: expected an image/* data URL, got media type {mime!r}",
                       code="invalid_image_url", param=param)
    if ";base64" not in match.group("params").lower():
        raise ApiError(400, "image_url: expected a base64-encoded data URL (';base64,')",
                       code="invalid_image_url", param=param)
    data = match.group("data")
    # base64 grows 4/3: refuse oversized payloads before decoding them.
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise ApiError(413, f"image_url: image larger than {max_bytes} bytes",
                       code="image_too_large", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"image_url: invalid base64 data ({exc})",
                       code="invalid_base64", param=param) from None
    if len(raw) > max_bytes:
        raise ApiError(413, f"image_url: image of {len(raw)} bytes is larger than {max_bytes} bytes",
                       code="image_too_large", param=param)
    try:
        with Image.open(io.BytesIO(raw), formats=_ACCEPTED_PIL_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ApiError(413, f"image_url: image of {width}x{height} pixels exceeds "
                               f"{max_pixels} pixels", code="image_too_large", param=param)
            rgb = img.convert("RGB")
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(400, f"image_url: not a decodable {'/'.join(_ACCEPTED_PIL_FORMATS)} "
                       f"image ({exc})", code="invalid_image", param=param) from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ApiError(400, f"image_url: empty image {array.shape}", code="invalid_image",
                       param=param)
    return array


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------- requests

class _Model(BaseModel):
    # Clients send many optional OpenAI fields; unknown ones are accepted and ignored.
    model_config = ConfigDict(extra="allow")


class _ImageURL(_Model):
    url: str
    detail: str | None = None


class _ImagePart(_Model):
    type: Literal["image_url"]
    image_url: _ImageURL


class _TextPart(_Model):
    type: Literal["text"]
    text: str


_ContentPart = Annotated[Union[_ImagePart, _TextPart], Field(discriminator="type")]


class _Message(_Model):
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, list[_ContentPart]]


class _ChatCompletionRequest(_Model):
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    allowed_token_ids: list[int] | None = None
    n: int = 1
    stream: bool = False


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions request of the supported subset."""

    model: str
    image_url: str
    prompt: str
    max_tokens: int | None
    allowed_token_ids: list[int] | None


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON request body; raise :class:`ApiError` (400) naming the field.

    The subset: exactly one ``user`` message holding one ``image_url`` part
    and one ``text`` part; ``n == 1``; no streaming; ``temperature`` 0 or
    absent (decoding is greedy: a sampling temperature would be ignored, so
    it is refused rather than silently dropped).
    """
    if not isinstance(body, dict):
        raise ApiError(400, f"request body: expected a JSON object, got {type(body).__name__}",
                       code="invalid_body")
    try:
        request = _ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request body"
        raise ApiError(400, f"{where}: {first['msg']}", code="invalid_request",
                       param=where) from None
    if request.n != 1:
        raise ApiError(400, f"n: only n=1 is supported, got {request.n}", param="n")
    if request.stream:
        raise ApiError(400, "stream: streaming is not supported", param="stream")
    if request.temperature not in (None, 0, 0.0):
        raise ApiError(400, f"temperature: this server decodes greedily, expected 0, got "
                       f"{request.temperature}", param="temperature")
    if len(request.messages) != 1 or request.messages[0].role != "user":
        roles = [m.role for m in request.messages]
        raise ApiError(400, f"messages: expected exactly one user message, got roles {roles}",
                       param="messages")
    content = request.messages[0].content
    if isinstance(content, str):
        raise ApiError(400, "messages[0].content: expected a list with one image_url part and "
                       "one text part, got a plain string (no image)", code="missing_image",
                       param="messages[0].content")
    images = [p for p in content if isinstance(p, _ImagePart)]
    texts = [p for p in content if isinstance(p, _TextPart)]
    if len(images) != 1:
        raise ApiError(400, f"messages[0].content: expected exactly one image_url part, got "
                       f"{len(images)}", code="missing_image" if not images else "too_many_images",
                       param="messages[0].content")
    if len(texts) != 1 or not texts[0].text.strip():
        raise ApiError(400, "messages[0].content: expected exactly one non-empty text part",
                       code="missing_text", param="messages[0].content")
    max_tokens = request.max_completion_tokens or request.max_tokens
    return ChatRequest(model=request.model, image_url=images[0].image_url.url,
                       prompt=texts[0].text.strip(), max_tokens=max_tokens,
                       allowed_token_ids=request.allowed_token_ids)


def chat_request_body(model: str, image_url: str, prompt: str, *, max_tokens: int,
                      allowed_token_ids: Sequence[int] | None = None,
                      want_token_ids: bool = False) -> dict[str, Any]:
    """Return the JSON body of one greedy chat-completions request.

    ``allowed_token_ids`` is vLLM's sampling extension (every generated token
    is one of them).  ``want_token_ids`` asks vLLM for the generated token ids
    (``logprobs`` + ``return_tokens_as_token_ids``), which identify action
    tokens whose text is not a number (``last`` / ``least_frequent`` schemes).
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": prompt},
        ]}],
        "max_tokens": int(max_tokens),
        "temperature": 0,
    }
    if allowed_token_ids is not None:
        body["allowed_token_ids"] = [int(i) for i in allowed_token_ids]
    if want_token_ids:
        body["logprobs"] = True
        body["return_tokens_as_token_ids"] = True
    return body


# --------------------------------------------------------------------------- responses

def completion_text(response: Any) -> str:
    """Return ``choices[0].message.content`` of a chat completion; ValueError if absent."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("expected choices[0].message.content in the answer") from None
    if not isinstance(content, str):
        raise ValueError(f"choices[0].message.content: expected a string, got "
                         f"{type(content).__name__}")
    return content


def completion_token_ids(response: Any) -> list[int] | None:
    """Return the generated token ids a response carries, or None when it carries none.

    Sources, in order: the ``rt2`` extension (``rt2.token_ids``, rt2-ros
    serve); vLLM's ``choices[0].logprobs.content[*].token`` when requested with
    ``return_tokens_as_token_ids`` (strings ``token_id:<id>``).  ValueError if
    a source is present but malformed.
    """
    rt2 = response.get("rt2") if isinstance(response, dict) else None
    if isinstance(rt2, dict) and "token_ids" in rt2:
        ids = rt2["token_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                for i in ids):
            raise ValueError(f"rt2.token_ids: expected a list of integers, got {ids!r}")
        return list(ids)
    try:
        entries = response["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(entries, list):
        return None
    ids = []
    for position, entry in enumerate(entries):
        token = entry.get("token") if isinstance(entry, dict) else None
        match = _TOKEN_ID.match(token) if isinstance(token, str) else None
        if match is None:
            # logprobs without return_tokens_as_token_ids: tokens are text, not ids
            return None
        ids.append(int(match.group(1)))
    return ids


# --------------------------------------------------------------------------- action space

@dataclass(frozen=True)
class ActionSpace:
    """Which vocabulary id means which bin, per action position, and how bins decode.

    ``allowed_token_ids[p][b]`` is the id of bin ``b`` at position ``p`` (so
    the terminate position of ``rt2_arm`` lists 2 ids, the others 256).  It
    is computed from the model's token scheme and embodiment, and with the
    embodiment (statistics included) it is all a client needs to build vLLM's
    ``allowed_token_ids`` and to turn generated ids back into an action.
    """

    embodiment: Any                      # rt2_ros.action_language.Embodiment
    scheme: str
    allowed_token_ids: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        body = self.embodiment
        if len(self.allowed_token_ids) != body.num_tokens:
            raise ValueError(f"action space: embodiment {body.name!r} has {body.num_tokens} dims but "
                             f"{len(self.allowed_token_ids)} lists of allowed token ids were given")
        for position, ids in enumerate(self.allowed_token_ids):
            name = body.names[position]
            if len(ids) != body.allowed_bins(position):
                raise ValueError(f"action space: position {position} ({name}) has {len(ids)} token "
                                 f"ids, embodiment {body.name!r} has {body.allowed_bins(position)} bins")
            if len(set(ids)) != len(ids):
                raise ValueError(f"action space: position {position} ({name}) maps two bins to "
                                 "one token id")
        object.__setattr__(self, "_bin_of", tuple({tid: b for b, tid in enumerate(ids)}
                                                  for ids in self.allowed_token_ids))

    @classmethod
    def from_scheme(cls, scheme: Any, embodiment: Any) -> "ActionSpace":
        """Build from a ``TokenScheme`` and an ``Embodiment`` of the action language."""
        allowed = tuple(tuple(int(scheme.bin_to_id(b)) for b in range(embodiment.allowed_bins(p)))
                        for p in range(embodiment.num_tokens))
        return cls(embodiment=embodiment, scheme=scheme.name, allowed_token_ids=allowed)

    @property
    def dims(self) -> list[str]:
        """Dim names in token order."""
        return list(self.embodiment.names)

    @property
    def num_tokens(self) -> int:
        """Number of action tokens (positions)."""
        return len(self.allowed_token_ids)

    def union(self) -> list[int]:
        """Return every id legal at some position, sorted (vLLM's ``allowed_token_ids``)."""
        return sorted({tid for ids in self.allowed_token_ids for tid in ids})

    def bins_for_ids(self, token_ids: Sequence[int]) -> list[int]:
        """Return the bins of generated action ids; ValueError naming position and id."""
        if len(token_ids) != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} action token ids, got "
                             f"{len(token_ids)}: {list(token_ids)}")
        bins = []
        for position, token_id in enumerate(token_ids):
            bin_ = self._bin_of[position].get(token_id)  # type: ignore[attr-defined]
            if bin_ is None:
                raise ValueError(f"token {position} ({self.dims[position]}): id {token_id} is not "
                                 f"an action token at this position")
            bins.append(bin_)
        return bins

    def ids_for_bins(self, bins: Sequence[int]) -> list[int]:
        """Return the vocabulary ids of ``bins`` (one per position)."""
        return [self.allowed_token_ids[p][int(b)] for p, b in enumerate(bins)]

    def check_embodiment(self, embodiment: Any) -> None:
        """Raise ValueError unless ``embodiment`` decodes exactly as this space's embodiment.

        Same name, dims, ranges, discretization and statistics: a robot whose
        configuration differs from the model's would scale every action wrongly.
        """
        ours, theirs = self.embodiment.to_dict(), embodiment.to_dict()
        if ours == theirs:
            return
        for key in ("name", "bins", "discretization"):
            if ours[key] != theirs[key]:
                raise ValueError(f"the model's embodiment has {key} {ours[key]!r}, this policy's "
                                 f"has {theirs[key]!r}")
        names = [d["name"] for d in ours["dims"]]
        if names != [d["name"] for d in theirs["dims"]]:
            raise ValueError(f"the model's embodiment has dims {names}, this policy's has "
                             f"{[d['name'] for d in theirs['dims']]}")
        for mine, other in zip(ours["dims"], theirs["dims"]):
            if mine != other:
                raise ValueError(f"dim {mine['name']!r} differs: the model's is {mine}, this "
                                 f"policy's is {other}")

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form served at ``GET /v1/rt2/action_space``."""
        return {"embodiment": self.embodiment.to_dict(), "dims": self.dims, "scheme": self.scheme,
                "num_tokens": self.num_tokens,
                "allowed_token_ids": [list(ids) for ids in self.allowed_token_ids]}

    @classmethod
    def from_json(cls, data: Any) -> "ActionSpace":
        """Parse :meth:`to_json` output; ValueError naming the bad field."""
        from rt2_ros.action_language import embodiment_from_dict
        from rt2_ros.errors import ActionLanguageError

        if not isinstance(data, dict):
            raise ValueError(f"action space: expected a JSON object, got {type(data).__name__}")
        for key, kind in (("embodiment", dict), ("scheme", str), ("allowed_token_ids", list)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"action space: {key}: expected a {kind.__name__}, got "
                                 f"{data.get(key)!r:.80}")
        try:
            embodiment = embodiment_from_dict(data["embodiment"], source="action space")
        except ActionLanguageError as exc:
            raise ValueError(str(exc)) from None
        allowed = []
        for position, ids in enumerate(data["allowed_token_ids"]):
            if not isinstance(ids, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                raise ValueError(f"action space: allowed_token_ids[{position}]: expected a list "
                                 f"of non-negative integers, got {ids!r:.80}")
            allowed.append(tuple(ids))
        return cls(embodiment=embodiment, scheme=data["scheme"], allowed_token_ids=tuple(allowed))
