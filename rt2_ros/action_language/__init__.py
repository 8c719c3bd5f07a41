"""The RT-2 action language: embodiments, discretization, token schemes, prompts.

Pure Python (numpy and PyYAML only; no rclpy, no torch):

- :class:`Embodiment` / :class:`Dim` — an action space loaded from
  ``config/embodiments/<name>.yaml`` (:func:`load_embodiment`), with strict
  ``encode`` (values -> bins) and ``decode`` (bins -> values);
- :class:`TokenScheme` and its ``integer`` / ``least_frequent`` / ``last``
  kinds — bins <-> vocabulary ids, and the ids legal per position;
- :func:`build_prompt`, :func:`format_action_text`, :func:`parse_action_text`,
  :func:`parse_model_output` — the text around and of an action.

Every malformed input raises :class:`ActionLanguageError` naming the position
or key and the offending value.
"""
from rt2_ros.action_language.embodiment import (
    KINDS,
    TERMINATE,
    Dim,
    Embodiment,
    embodiment_from_dict,
    list_embodiments,
    load_embodiment,
)
from rt2_ros.action_language.discretization import DISCRETIZATIONS
from rt2_ros.action_language.prompts import (
    OPENVLA_PROMPT,
    PROMPTS,
    RT2_PROMPT,
    ParsedOutput,
    build_prompt,
    format_action_text,
    parse_action_text,
    parse_model_output,
)
from rt2_ros.action_language.token_schemes import (
    SCHEMES,
    IntegerScheme,
    LastScheme,
    LeastFrequentScheme,
    TokenScheme,
    count_tokens,
    make_scheme,
)
from rt2_ros.errors import ActionLanguageError

__all__ = [
    "ActionLanguageError",
    "DISCRETIZATIONS", "KINDS", "TERMINATE",
    "Dim", "Embodiment", "load_embodiment", "embodiment_from_dict", "list_embodiments",
    "SCHEMES", "TokenScheme", "IntegerScheme", "LeastFrequentScheme", "LastScheme", "make_scheme",
    "count_tokens",
    "PROMPTS", "RT2_PROMPT", "OPENVLA_PROMPT", "build_prompt", "format_action_text",
    "parse_action_text", "parse_model_output", "ParsedOutput",
]
