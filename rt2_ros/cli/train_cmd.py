"""``rt2-ros collect``, ``rt2-ros train`` and ``rt2-ros record``: data and co-fine-tuning.

::

    rt2-ros collect --episodes N --seed S --out DIR      # sim expert episodes + grounded VQA
    rt2-ros collect ... --policy-model CKPT --expert-share 0.5   # DAgger: a model drives, the expert labels
    rt2-ros train --out CKPT --from-scratch small --data DIR --vqa DIR [--robot-fraction 0.5] ...
    rt2-ros train --out CKPT --model PRETRAINED_DIR --data BAGS --vqa vqa.jsonl ...
    rt2-ros record --out DIR                              # ROS node: one MCAP bag per episode

``collect`` and ``train`` print one JSON summary on stdout (progress goes to
stderr); see docs/training.md for the formats and the recipe.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from rt2_ros.cli import PLAN_DECODING_HELP, THREADS_HELP, set_torch_threads
from rt2_ros.errors import ConfigError
from rt2_ros.policy.config import DECODINGS, PLAN_DECODINGS
from rt2_ros.training.episodes import PLAN_KINDS


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(subparsers: Any) -> None:
    """Add the ``collect``, ``train`` and ``record`` sub-commands."""
    collect = subparsers.add_parser(
        "collect", help="simulator expert episodes + grounded VQA -> a training data directory",
        description="Run the scripted expert in the simulator and write one MCAP episode per task "
                    "(OUT/episodes) plus grounded VQA about the scenes (OUT/vqa).")
    collect.add_argument("--episodes", type=int, required=True, help="number of episodes to write")
    collect.add_argument("--seed", type=int, default=0, help="first scene seed (default: 0)")
    collect.add_argument("--out", required=True, help="output directory (must not hold data yet)")
    collect.add_argument("--image-size", type=int, default=96, help="camera image size in pixels (default: 96)")
    collect.add_argument("--shadows", action="store_true", help="render shadows (slower)")
    collect.add_argument("--control-rate-hz", type=float, default=5.0, help="policy steps per second (default: 5)")
    collect.add_argument("--max-steps", type=int, default=80, help="step limit per episode (default: 80)")
    collect.add_argument("--embodiment", default="rt2_arm", help="embodiment name or YAML path (default: rt2_arm)")
    collect.add_argument("--task", default="random",
                         help="task kind (pick, move_near, push, place_on) or random (default)")
    collect.add_argument("--vqa-scenes", type=int, default=-1,
                         help="scenes with VQA (default: one per episode seed)")
    collect.add_argument("--questions-per-scene", type=int, default=6, help="VQA questions per scene (default: 6)")
    collect.add_argument("--exclude-objects", default="",
                         help="comma-separated colours, shapes or names kept out of the episodes "
                              "(not out of the VQA), e.g. 'purple,red sphere'")
    collect.add_argument("--action-noise", type=float, default=0.0, metavar="M",
                         help="std (m) of Gaussian noise added to the executed x/y/z of each step while "
                              "the expert's clean action is recorded (DART-style recovery data; default 0)")
    collect.add_argument("--gripper-questions", type=int, default=0, metavar="N",
                         help="'where is the gripper?' point questions on N frames of each episode "
                              "(default 0)")
    collect.add_argument("--random-start", type=float, default=0.0, metavar="F",
                         help="share of episodes whose hand starts at a random point over the table instead "
                              "of home (0..1; default 0): states where the way to go depends on where the "
                              "gripper is")
    dagger = collect.add_argument_group(
        "DAgger", "a trained model drives the arm on some steps, the expert labels every step")
    dagger.add_argument("--policy-model", default="", metavar="CKPT",
                        help="checkpoint (transformers backend) that drives on 1 - expert share of the steps")
    dagger.add_argument("--expert-share", type=float, default=None, metavar="F",
                        help="share of steps the expert drives, drawn per step (default: 1 without "
                             "--policy-model, 0.5 with it)")
    dagger.add_argument("--decoding", default="greedy", choices=DECODINGS,
                        help="how the model chooses its action tokens (default: greedy)")
    dagger.add_argument("--plan-decoding", default="auto", choices=PLAN_DECODINGS,
                        help=PLAN_DECODING_HELP)
    dagger.add_argument("--hand-state", action="store_true",
                        help="give the model the hand's height and last gripper command each step, as "
                             "rt2-ros eval --hand-state does (a hand-planning checkpoint then writes them "
                             "from it instead of reading them off the image)")
    dagger.add_argument("--device", default="auto", help="the model's device: auto, cpu, cuda or cuda:N")
    dagger.add_argument("--threads", type=int, default=0, metavar="N", help=THREADS_HELP)
    collect.set_defaults(func=run_collect)

    train = subparsers.add_parser(
        "train", help="co-fine-tune a VLM on robot episodes + VQA (RT-2 recipe)",
        description="Train a vision-language-action model: robot episodes and VQA data mixed in every "
                    "batch, one next-token loss on the answer tokens; saves a checkpoint directory that "
                    "rt2-ros act/serve and the policy node load.")
    start = train.add_mutually_exclusive_group(required=True)
    start.add_argument("--model", default="", help="pretrained Hugging Face VLM checkpoint directory")
    start.add_argument("--from-scratch", default="", choices=["tiny", "small"],
                       help="build a small VLM from a config instead (what runs on a CPU)")
    train.add_argument("--out", required=True, help="output checkpoint directory")
    train.add_argument("--data", action="append", default=[],
                       help="robot episodes: a collect output, a directory of bags, one bag or a LeRobot v3 "
                            "dataset directory (repeatable)")
    train.add_argument("--vqa", action="append", default=[],
                       help="VQA data: a JSONL file, a collect output or a datasets directory (repeatable)")
    train.add_argument("--robot-fraction", type=float, default=0.5,
                       help="share of robot samples per batch, in expectation (default: 0.5; PaLM-E used 0.66)")
    train.add_argument("--profile", default="rt2", choices=["rt2", "openvla"], help="prompt (default: rt2)")
    train.add_argument("--embodiment", default="", help="embodiment name or YAML path (default: the profile's)")
    train.add_argument("--scheme", default="auto", choices=["auto", "integer", "least_frequent", "last"],
                       help="action token scheme (default: auto = integer if every bin is one token, "
                            "else least_frequent)")
    train.add_argument("--action-bounds", default="embodiment", choices=["embodiment", "q01q99", "minmax"],
                       help="bin the actions within the embodiment's bounds or bounds fitted to the data")
    train.add_argument("--batch-size", type=int, default=16, help="samples per device per step (default: 16)")
    train.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default: 1)")
    train.add_argument("--max-steps", type=int, default=1000, help="optimizer steps (default: 1000)")
    train.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default: 3e-4)")
    train.add_argument("--lr-scheduler", default="cosine",
                       choices=["cosine", "linear", "constant", "constant_with_warmup"])
    train.add_argument("--warmup", type=float, default=0.03,
                       help="warm-up: a fraction of max steps (< 1) or a number of steps (default: 0.03)")
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--eval-steps", type=int, default=200,
                       help="evaluate held-out data every N steps (0: only at the end; default: 200)")
    train.add_argument("--save-steps", type=int, default=0,
                       help="save a checkpoint-N every N steps (0: only the final one)")
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--eval-episodes", type=int, default=2,
                       help="episodes of --data held out, drawn by name (default: 2)")
    train.add_argument("--eval-data", action="append", default=[], metavar="DIR",
                       help="robot episodes held out for evaluation instead of --eval-episodes drawn from "
                            "--data (repeatable; same formats as --data): a held-out set that stays the same "
                            "as data is added, e.g. across DAgger rounds")
    train.add_argument("--eval-vqa-images", type=int, default=20,
                       help="VQA images held out with all their questions (default: 20)")
    train.add_argument("--image-size", type=int, default=0,
                       help="image size of the cached samples (default: the model's)")
    train.add_argument("--outcomes", default="success", choices=["success", "not-failed", "all"],
                       help="which episodes to train on (default: successful ones)")
    train.add_argument("--action-source", default="auto", choices=["auto", "rt2_action", "ee_pose"],
                       help="action labels: recorded RT2Action messages or end-effector pose deltas")
    train.add_argument("--control-rate-hz", type=float, default=0.0,
                       help="ee_pose: steps per second, when the episodes do not record it")
    train.add_argument("--cache-dir", default="", help="where sample caches go (default: DATA/.rt2_cache)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    train.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    train.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    train.add_argument("--trust-remote-code", action="store_true")
    train.add_argument("--hf-split", default="train", help="datasets directories: the split (default: train)")
    train.add_argument("--grounding-weight", type=float, default=0.0, metavar="W",
                       help="add W x -log(attention on the answer's image patch) for VQA items with a point "
                            "(the simulator's 'where is the X?' questions) and robot samples with grounding "
                            "points; with --plan, the plan is pointed at the image and the action at the "
                            "plan's numbers; 0 = off (docs/training.md)")
    train.add_argument("--grounding-layer", type=int, default=-1,
                       help="decoder layer whose attention the grounding loss supervises (-1: the middle one)")
    train.add_argument("--plan", choices=list(PLAN_KINDS), default="none",
                       help="chain of thought for robot answers: 'points' trains the model to write where the "
                            "action heads and where the gripper is ('Plan: goal C R gripper C R Action: ...', "
                            "from the episodes' grounding points) before the action; 'object_points' first "
                            "names the task's object and where it is, as a 'where is the X?' answer would "
                            "('Plan: green sphere C R goal C R gripper C R Action: ...'); "
                            "'object_points_hand' then adds the hand's height in cm and whether the fingers "
                            "were last told to close ('... gripper C R height H closed 0|1 Action: ...', from "
                            "the episodes' end-effector pose and gripper commands); 'hand_points_offset' "
                            "writes the hand first, then the object and the goal, then where the goal lies "
                            "from the hand ('Plan: gripper C R height H closed 0|1 green sphere C R goal C R "
                            "offset DC DR Action: ...', offsets 128-centred, in half bins); 'hand_under_offset' "
                            "adds the point under the hand at the goal's height after the goal and measures the "
                            "offset from it ('... goal C R under C R offset DC DR Action: ...': horizontal "
                            "distance only; needs episodes with the 'under' point, collected since "
                            "2026-12-07); 'hand_target_offset' names and points at the object the hand heads "
                            "for instead of always the task's object: the task's reference object once the "
                            "fingers are closed ('... closed 1 red cube C R goal ...'; needs episodes with the "
                            "'reference' point, collected since 2026-12-07); the checkpoint is then loaded "
                            "with chain of thought on")
    train.add_argument("--plan-given-fraction", type=float, default=0.0, metavar="F",
                       help="with --plan: this fraction of robot samples is trained as plan -> action only: "
                            "the image is another sample's, the plan is given (no loss on it), so the action "
                            "tokens learn to follow the plan instead of the image alone (default 0)")
    train.add_argument("--event-repeat", type=int, default=1, metavar="K",
                       help="draw the robot steps that close or open the gripper or terminate K times per "
                            "pass over the data instead of once (1-100; default 1): they are a few per cent "
                            "of the steps and a missed one fails the episode")
    train.add_argument("--lerobot-camera", default="", metavar="FEATURE",
                       help="LeRobot datasets in --data: the image/video feature to train on (default: the only one)")
    train.add_argument("--lerobot-action-map", default="", metavar="DIM=INDEX,...",
                       help="LeRobot datasets: action vector index of each embodiment dim, e.g. "
                            "'x=0,y=1,z=2,roll=3,pitch=4,yaw=5,gripper=6' (default: by the action's names)")
    for column in ("image", "question", "answer"):
        train.add_argument(f"--hf-{column}-column", default=column, metavar="NAME",
                           help=f"datasets directories: the {column} column (default: {column})")
    train.add_argument("--training-args", default="{}",
                       help="more transformers TrainingArguments as JSON, e.g. '{\"fsdp\": \"full_shard\"}'")
    train.set_defaults(func=run_train)

    record = subparsers.add_parser(
        "record", help="ROS node: record episodes (camera, instruction, actions, commands, pose) to MCAP",
        description="Record one rosbag2 MCAP bag per episode. An instruction message starts an episode; "
                    "call ~/end_episode (std_srvs/SetBool, data = success) to close it.")
    record.add_argument("--out", required=True, help="directory for the episode bags")
    defaults = {"camera": "/camera/image_raw", "instruction": "/rt2/instruction", "action": "/rt2/action",
                "twist": "/servo_node/delta_twist_cmds", "gripper": "/gripper/command",
                "ee-pose": "/ee_pose"}
    for role, topic in defaults.items():
        record.add_argument(f"--{role}-topic", default=topic, help=f"(default: {topic})")
    record.add_argument("--image-transport", default="raw", choices=["raw", "compressed"],
                        help="raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage")
    record.add_argument("--gripper-message", default="float64", choices=["float64", "float64_multi_array"],
                        help="gripper command type (default: float64)")
    record.add_argument("--embodiment", default="rt2_arm", help="written into each episode's metadata")
    record.add_argument("--control-rate-hz", type=float, default=5.0, help="written into each episode's metadata")
    record.add_argument("--max-episode-s", type=float, default=0.0, help="close longer episodes (0: never)")
    record.add_argument("--end-on-terminate", action="store_true",
                        help="close an episode when an action has the terminate flag")
    record.set_defaults(func=run_record)


def run_collect(args: argparse.Namespace) -> int:
    """``rt2-ros collect``."""
    from rt2_ros.cli import print_json
    from rt2_ros.sim.scene import parse_object_terms
    from rt2_ros.training.sim_data import CollectConfig, collect

    exclude = parse_object_terms("--exclude-objects", args.exclude_objects)
    share = args.expert_share if args.expert_share is not None else (0.5 if args.policy_model else 1.0)
    config = CollectConfig(episodes=args.episodes, seed=args.seed, image_size=args.image_size,
                           shadows=args.shadows, control_rate_hz=args.control_rate_hz, max_steps=args.max_steps,
                           embodiment=args.embodiment, task=args.task, vqa_scenes=args.vqa_scenes,
                           questions_per_scene=args.questions_per_scene, exclude_objects=exclude,
                           action_noise=args.action_noise, random_start=args.random_start,
                           gripper_questions=args.gripper_questions,
                           expert_share=share, learner=args.policy_model, learner_hand_state=args.hand_state)
    learner = None
    set_torch_threads("collect", args.threads, learned_policy=bool(args.policy_model))
    if args.policy_model:
        from rt2_ros.policy.config import PolicyConfig
        from rt2_ros.policy.factory import make_policy

        # The checkpoint's own embodiment (its bins and bounds); its action values are metres and
        # radians like the expert's, whatever bins each side uses.
        learner = make_policy(PolicyConfig(backend="transformers", model=args.policy_model,
                                           device=args.device, decoding=args.decoding,
                                           plan_decoding=args.plan_decoding))
        _log(f"collect: DAgger, {args.policy_model} drives {1 - share:.0%} of the steps, the expert labels all")
    from tqdm import tqdm

    bars: list[Any] = []  # opened by the first progress report, so input errors print alone

    def progress(counts: dict[str, int]) -> None:
        if not bars:
            bars.append(tqdm(total=max(config.episodes, 1), desc="episodes", unit="ep", file=sys.stderr))
        bars[0].update(counts["episodes"] - bars[0].n)
        bars[0].set_postfix(successes=counts["successes"], vqa_scenes=counts["vqa_scenes"],
                            **({"learner_steps": counts["learner_steps"]} if learner is not None else {}))

    try:
        summary = collect(args.out, config, progress, learner=learner)
    finally:
        for bar in bars:
            bar.close()
        if learner is not None:
            learner.close()
    print_json(summary)
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``rt2-ros train``."""
    from rt2_ros.cli import print_json
    from rt2_ros.training.trainer import TrainConfig, train

    try:
        extra = json.loads(args.training_args)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--training-args: expected a JSON object, got {args.training_args!r} ({exc.msg})") from None
    config = TrainConfig(
        output_dir=args.out, data=tuple(args.data), vqa=tuple(args.vqa), model=args.model,
        from_scratch=args.from_scratch, profile=args.profile, embodiment=args.embodiment, scheme=args.scheme,
        action_bounds=args.action_bounds, robot_fraction=args.robot_fraction, batch_size=args.batch_size,
        grad_accum=args.grad_accum, max_steps=args.max_steps, learning_rate=args.lr,
        lr_scheduler=args.lr_scheduler, warmup=args.warmup, weight_decay=args.weight_decay,
        eval_steps=args.eval_steps, save_steps=args.save_steps, logging_steps=args.logging_steps,
        eval_episodes=args.eval_episodes, eval_data=tuple(args.eval_data), eval_vqa_images=args.eval_vqa_images,
        image_size=args.image_size,
        outcomes=args.outcomes, action_source=args.action_source, control_rate_hz=args.control_rate_hz,
        cache_dir=args.cache_dir, seed=args.seed, bf16=args.bf16, use_cpu=args.cpu,
        num_workers=args.num_workers, trust_remote_code=args.trust_remote_code, hf_split=args.hf_split,
        hf_image_column=args.hf_image_column, hf_question_column=args.hf_question_column,
        hf_answer_column=args.hf_answer_column, grounding_weight=args.grounding_weight,
        grounding_layer=args.grounding_layer, plan=args.plan, plan_given_fraction=args.plan_given_fraction,
        event_repeat=args.event_repeat, lerobot_camera=args.lerobot_camera,
        lerobot_action_map=args.lerobot_action_map, extra=extra)
    # The Trainer prints its logs and progress on stdout; stdout carries only the final JSON.
    with contextlib.redirect_stdout(sys.stderr):
        summary = train(config, log=_log)
    print_json({"checkpoint": args.out, "final_metrics": summary["final_metrics"],
                "parameters": summary["parameters"], "checkpoint_bytes": summary["checkpoint_bytes"],
                "train_runtime_s": summary["train_runtime_s"], "scheme": summary["scheme"],
                "data": summary["data"]})
    return 0


def run_record(args: argparse.Namespace) -> int:
    """``rt2-ros record`` (runs the ROS node until interrupted)."""
    from rt2_ros.nodes.recorder import main

    return main([], out_dir=args.out, camera_topic=args.camera_topic,
                instruction_topic=args.instruction_topic, action_topic=args.action_topic,
                twist_topic=args.twist_topic, gripper_topic=args.gripper_topic,
                ee_pose_topic=args.ee_pose_topic, image_transport=args.image_transport,
                gripper_message=args.gripper_message, embodiment=args.embodiment,
                control_rate_hz=float(args.control_rate_hz), max_episode_s=float(args.max_episode_s),
                end_on_terminate=args.end_on_terminate)
