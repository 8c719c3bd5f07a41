"""Co-fine-tuning (RT-2's recipe): robot episodes + VQA data -> a vision-language-action checkpoint.

Data in:

- :mod:`~rt2_ros.training.mcap_io` - rosbag2 MCAP read/write without ROS (rosbags);
- :mod:`~rt2_ros.training.episodes` - the episode format (one bag per episode,
  outcome in ``custom_data``) and episode -> samples;
- :mod:`~rt2_ros.training.sim_data` - simulator expert episodes and grounded VQA
  (``rt2-ros collect``);
- :mod:`~rt2_ros.training.vqa_data` - VQA/caption JSONL and ``datasets`` directories;
- :mod:`~rt2_ros.training.samples` - on-disk sample caches (images resized once).

Training:

- :mod:`~rt2_ros.training.mixture` - batches with a robot fraction;
- :mod:`~rt2_ros.training.collate` - prompt + answer ids, labels, token types;
- :mod:`~rt2_ros.training.checkpoint` - token scheme, re-initialised rows,
  action statistics, ``rt2_ros.json``;
- :mod:`~rt2_ros.training.metrics` - held-out action token accuracy, VQA exact match;
- :mod:`~rt2_ros.training.from_scratch` - small VLMs from a config;
- :mod:`~rt2_ros.training.trainer` - ``rt2-ros train`` on the Hugging Face Trainer.

The ROS recorder (``rt2-ros record``) is :mod:`rt2_ros.nodes.recorder`.
See docs/training.md.  Nothing here imports rclpy; torch and transformers
are imported where they are used.
"""
