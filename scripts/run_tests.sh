#!/usr/bin/env bash
# Run the test suite with the environment every test expects.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export ROS_PYTHON_CHECK_FIELDS=1          # a wrong field type is an error, not garbage on the wire
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export FASTDDS_DEFAULT_PROFILES_FILE="$here/config/fastdds_localhost.xml"
export PYTHONDONTWRITEBYTECODE=1
unset ROS_AUTOMATIC_DISCOVERY_RANGE ROS_LOCALHOST_ONLY
exec "$here/.venv/bin/python" -m pytest "$@"
