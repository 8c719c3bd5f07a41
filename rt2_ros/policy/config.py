"""Validated configuration of a policy backend.

One dataclass for every backend, because the ROS parameters, the CLI flags and
``rt2-ros serve`` all describe the same thing: which policy to run.  Each
backend reads the fields it needs through its ``from_config`` constructor.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from rt2_ros.errors import ConfigError
from rt2_ros.validation import (expect_bool, expect_int, expect_number, expect_str,
                                reject_unknown_keys)

BACKENDS = ("transformers", "remote", "scripted", "expert")
PROFILES = ("rt2", "openvla")
#: How an action position's token is chosen (rt2_ros.policy.constrained_decoding explains median).
DECODINGS = ("greedy", "median")
#: How a planning checkpoint's plan is written: ``layout`` (the decoder writes the plan kind's words,
#: the model only the object's name and the numbers), ``free`` (the model writes all of it) or
#: ``auto`` (layout where the checkpoint names its plan kind and its tokenizer writes each plan word
#: and each integer 0..255 as one token, else free).
PLAN_DECODINGS = ("auto", "layout", "free")


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy to run and how.  Build with :meth:`from_mapping` to validate."""

    backend: str = "transformers"
    # transformers: checkpoint directory; remote: the server's model name.
    model: str = ""
    profile: str = "rt2"
    # Embodiment name or path; "" takes the profile's default (rt2 -> rt2_arm, openvla -> openvla_bridge).
    embodiment: str = ""
    chain_of_thought: bool = False
    max_plan_tokens: int = 32
    # transformers: how each action token is chosen: greedy (argmax) or median (continuous dims
    # take the median bin of the model's distribution; fewer wild moves when it is unsure).
    decoding: str = "greedy"
    # transformers: how a planning checkpoint's plan is written (PLAN_DECODINGS).
    plan_decoding: str = "auto"
    # transformers backend
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    dtype: str = "auto"             # auto | float32 | bfloat16 | float16
    quantization: str = "none"      # none | 8bit | 4bit (CUDA only, needs bitsandbytes)
    attn_implementation: str = ""   # "" lets transformers choose (sdpa, eager, flash_attention_2)
    trust_remote_code: bool = False
    unnorm_key: str = ""            # openvla: which dataset's q01/q99 statistics to use
    # remote backend
    server_url: str = "http://127.0.0.1:8000"
    api_key_env: str = ""           # name of the environment variable holding the bearer token
    # Local checkpoint/tokenizer directory giving the action token ids when the
    # server's model name is not a local path ("" = `model` if it is a
    # directory, else ask the server: rt2-ros serve answers /v1/rt2/action_space).
    tokenizer: str = ""
    image_format: str = "jpeg"      # jpeg | png
    jpeg_quality: int = 90
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    retries: int = 2
    # scripted backend
    scripted_actions: str = ""      # file with one action string per line
    scripted_loop: bool = False

    def __post_init__(self) -> None:
        expect_str("backend", self.backend, choices=BACKENDS)
        expect_str("model", self.model)
        expect_str("profile", self.profile, choices=PROFILES)
        expect_str("embodiment", self.embodiment)
        expect_bool("chain_of_thought", self.chain_of_thought)
        expect_int("max_plan_tokens", self.max_plan_tokens, low=1, high=512)
        expect_str("decoding", self.decoding, choices=DECODINGS)
        if self.decoding != "greedy" and self.backend != "transformers":
            raise ConfigError(f"decoding: {self.decoding!r} is chosen where the model runs (the "
                              f"transformers backend, or rt2-ros serve --decoding for remote), got "
                              f"backend {self.backend!r}")
        expect_str("plan_decoding", self.plan_decoding, choices=PLAN_DECODINGS)
        if self.plan_decoding != "auto" and self.backend != "transformers":
            raise ConfigError(f"plan_decoding: {self.plan_decoding!r} is chosen where the model runs (the "
                              f"transformers backend, or rt2-ros serve --plan-decoding for remote), got "
                              f"backend {self.backend!r}")
        expect_str("device", self.device, allow_empty=False)
        expect_str("dtype", self.dtype, choices=("auto", "float32", "bfloat16", "float16"))
        expect_str("quantization", self.quantization, choices=("none", "8bit", "4bit"))
        expect_str("attn_implementation", self.attn_implementation)
        expect_bool("trust_remote_code", self.trust_remote_code)
        expect_str("unnorm_key", self.unnorm_key)
        expect_str("server_url", self.server_url)
        expect_str("api_key_env", self.api_key_env)
        expect_str("tokenizer", self.tokenizer)
        expect_str("image_format", self.image_format, choices=("jpeg", "png"))
        expect_int("jpeg_quality", self.jpeg_quality, low=1, high=100)
        expect_number("connect_timeout_s", self.connect_timeout_s, low=0.0, low_inclusive=False)
        expect_number("read_timeout_s", self.read_timeout_s, low=0.0, low_inclusive=False)
        expect_int("retries", self.retries, low=0, high=10)
        expect_str("scripted_actions", self.scripted_actions)
        expect_bool("scripted_loop", self.scripted_loop)

    @property
    def embodiment_name(self) -> str:
        """The embodiment to use: the explicit one, else the profile's default."""
        if self.embodiment:
            return self.embodiment
        return "openvla_bridge" if self.profile == "openvla" else "rt2_arm"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], section: str = "policy") -> "PolicyConfig":
        """Build from a dict (YAML, ROS parameters, CLI), rejecting unknown keys."""
        reject_unknown_keys(section, values.keys(), [f.name for f in fields(cls)])
        return cls(**dict(values))
