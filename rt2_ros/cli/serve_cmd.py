"""``rt2-ros serve``: serve a checkpoint over the OpenAI-compatible subset the remote backend speaks.

::

    rt2-ros serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key-env NAME]
                  [--max-batch 8] [--max-wait-ms 5] [--threads N] ...

Loads the checkpoint with the ``transformers`` backend, binds, prints one
JSON line ``{"url", "model", "profile", "embodiment", "auth", ...}`` on
stdout when it accepts connections, and serves until interrupted.  Robots
point the ``remote`` backend at ``url`` with ``model`` as the model name.
See docs/remote_serving.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import Any

from rt2_ros.cli import PLAN_DECODING_HELP, THREADS_HELP
from rt2_ros.errors import ConfigError
from rt2_ros.policy.config import DECODINGS, PLAN_DECODINGS

MB = 1024 * 1024


def register(subparsers: Any) -> None:
    """Add the ``serve`` sub-command."""
    p = subparsers.add_parser(
        "serve", help="serve a checkpoint to remote robots (OpenAI-compatible, batched)",
        description="Serve a checkpoint over POST /v1/chat/completions, GET /v1/models, "
                    "GET /v1/rt2/action_space and GET /health.  Robot prompts get constrained "
                    "action decoding, batched across concurrent robots; other prompts get "
                    "free-text answers.  Binds 127.0.0.1 unless told otherwise.")
    p.add_argument("--model", required=True, help="checkpoint directory (Hugging Face format)")
    p.add_argument("--served-model-name", default="",
                   help="the model name clients send (default: --model exactly as given)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else needs --api-key-env "
                        "or a trusted network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free)")
    p.add_argument("--api-key-env", default="",
                   help="environment variable holding the bearer token clients must send")
    p.add_argument("--ssl-certfile", default="", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", default="", help="private key of --ssl-certfile (PEM)")
    model = p.add_argument_group("model")
    model.add_argument("--profile", default="rt2", choices=("rt2", "openvla"))
    model.add_argument("--embodiment", default="",
                       help="embodiment name or YAML path (default: the checkpoint's or profile's)")
    model.add_argument("--unnorm-key", default="", help="openvla: dataset statistics to use")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    model.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    model.add_argument("--threads", type=int, default=0, metavar="N", help=THREADS_HELP)
    model.add_argument("--quantization", default="none", choices=("none", "8bit", "4bit"))
    model.add_argument("--attn-implementation", default="")
    model.add_argument("--trust-remote-code", action="store_true")
    model.add_argument("--chain-of-thought", action="store_true",
                       help="the model writes 'Plan: ... Action: ...'")
    model.add_argument("--max-plan-tokens", type=int, default=32)
    model.add_argument("--decoding", default="greedy", choices=DECODINGS,
                       help="greedy (argmax of each action token) or median (continuous dims take the "
                            "median bin of the model's distribution)")
    model.add_argument("--plan-decoding", default="auto", choices=PLAN_DECODINGS,
                       help=PLAN_DECODING_HELP)
    limits = p.add_argument_group("batching and limits")
    limits.add_argument("--max-batch", type=int, default=8,
                        help="robots decoded in one forward pass (default 8)")
    limits.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long the oldest request waits for others to join (default 5)")
    limits.add_argument("--max-queue", type=int, default=64,
                        help="queued requests beyond which 503 busy is answered (default 64)")
    limits.add_argument("--max-body-mb", type=float, default=16.0,
                        help="largest request body in MiB (default 16)")
    limits.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                        help="largest image, width x height (default 4096*4096)")
    limits.add_argument("--max-answer-tokens", type=int, default=256,
                        help="largest max_tokens of a free-text answer (default 256)")
    limits.add_argument("--request-timeout-s", type=float, default=60.0,
                        help="a request not answered by then gets 504 (default 60)")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host/--port: cannot listen on {host}:{port}: {exc}") from None
    return sock


def run(args: argparse.Namespace) -> int:
    """Load the model, bind, print the JSON line and serve until interrupted."""
    from rt2_ros.cli import print_json, set_torch_threads
    from rt2_ros.policy.config import PolicyConfig
    from rt2_ros.policy.remote import read_api_key
    from rt2_ros.policy.server import ServerSettings

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: expected 0..65535, got {args.port}")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile: give both or neither")
    api_key = read_api_key(args.api_key_env)
    set_torch_threads("serve", args.threads, learned_policy=True)
    settings = ServerSettings(
        model_name=args.served_model_name or args.model, profile=args.profile, api_key=api_key,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * MB), max_image_pixels=args.max_image_pixels,
        max_answer_tokens=args.max_answer_tokens,
        default_answer_tokens=min(32, args.max_answer_tokens),
        request_timeout_s=args.request_timeout_s)
    if api_key is None and not _is_loopback(args.host):
        print(f"rt2-ros serve: warning: listening on {args.host} without an API key; anyone who "
              f"can reach it can use the model (set --api-key-env, see docs/remote_serving.md)",
              file=sys.stderr)
    cfg = PolicyConfig(backend="transformers", model=args.model, profile=args.profile,
                       embodiment=args.embodiment, unnorm_key=args.unnorm_key, device=args.device,
                       dtype=args.dtype, quantization=args.quantization,
                       attn_implementation=args.attn_implementation,
                       trust_remote_code=args.trust_remote_code,
                       chain_of_thought=args.chain_of_thought,
                       max_plan_tokens=args.max_plan_tokens, decoding=args.decoding,
                       plan_decoding=args.plan_decoding)
    # Heavy imports only once the arguments are known to be good.
    import uvicorn

    from rt2_ros.policy.server import create_app
    from rt2_ros.policy.transformers_backend import TransformersPolicy

    policy = TransformersPolicy.from_config(cfg)
    try:
        app = create_app(policy, settings)
        sock = _bind(args.host, args.port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        scheme = "https" if args.ssl_certfile else "http"
        config = uvicorn.Config(app, log_level=args.log_level, lifespan="on",
                                ssl_certfile=args.ssl_certfile or None,
                                ssl_keyfile=args.ssl_keyfile or None)
        server = uvicorn.Server(config)
        print_json({"url": f"{scheme}://{shown}:{port}", "model": settings.model_name,
                    "profile": settings.profile, "embodiment": policy.embodiment.name,
                    "scheme": policy.scheme.name, "auth": api_key is not None,
                    "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms})
        server.run(sockets=[sock])
    finally:
        policy.close()
    return 0
