#!/usr/bin/env bash
# One-command set-up for pip mode (no ROS install needed): system packages
# (apt, when root), .venv with the ROS 2 Kilted wheels and the Python
# dependencies, msg/ and action/ built into the venv, the package installed
# editable.  Idempotent: each step is skipped while the inputs it was done
# for are unchanged (stamps in .venv/.rt2_stamps).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
venv="$here/.venv"
stamps="$venv/.rt2_stamps"
log() { printf '[setup] %s\n' "$*"; }

# --- 1. System packages: compilers for the interfaces, EGL/OSMesa for headless MuJoCo.
apt_pkgs=(cmake g++ make libegl1 libgl1-mesa-dri libosmesa6 libgl1)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing system packages (not root, cannot install): ${missing[*]}"
    for tool in cmake g++; do
      command -v "$tool" >/dev/null || { echo "error: $tool is required; install it (apt-get install ${missing[*]})" >&2; exit 1; }
    done
  fi
fi

# --- 2. Python 3.11 venv (the ROS 2 Kilted wheels are built for CPython 3.11).
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || { echo "error: $py not found; rt2_ros pip mode needs Python 3.11 (set PYTHON=...)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$py" -m venv "$venv"
fi
mkdir -p "$stamps"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# --- 3. Python dependencies.
deps_hash="$(cat pyproject.toml requirements.txt scripts/requirements-ros.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamps/deps-$deps_hash" ]; then
  log "installing Python dependencies (ROS 2 Kilted wheels, torch CPU, transformers, ...)"
  # colcon-core wants setuptools<80, torch wants >=77.0.3.
  "${pip[@]}" install -q --upgrade pip 'setuptools>=77.0.3,<80' wheel
  # Exactly 2.13.0: the CPU build; an open range pulls a multi-GB CUDA build.
  "${pip[@]}" install -q torch==2.13.0
  "${pip[@]}" install -q -r scripts/requirements-ros.txt
  # compat mode: a plain .pth to this checkout, so the generated rt2_ros.msg
  # (its own .pth, sorted after) joins the package (see build_interfaces.sh).
  # Its deprecation notice is noise here: setuptools is pinned below 80.
  PYTHONWARNINGS=ignore "${pip[@]}" install -q --no-build-isolation \
      --config-settings editable_mode=compat -e ".[test]"
  rm -f "$stamps"/deps-*
  touch "$stamps/deps-$deps_hash"
else
  log "Python dependencies up to date"
fi

# --- 4. ROS interfaces (msg/, action/) into the venv.
ifc_hash="$(cat msg/* action/* CMakeLists.txt package.xml scripts/build_interfaces.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamps/interfaces-$ifc_hash" ] || [ ! -d "$venv/lib/rt2_ros_interfaces/rt2_ros/msg" ]; then
  log "building ROS interfaces (msg/, action/)"
  bash scripts/build_interfaces.sh
  rm -f "$stamps"/interfaces-*
  touch "$stamps/interfaces-$ifc_hash"
else
  log "ROS interfaces up to date"
fi

# --- 5. Check that everything imports together from this checkout.
(cd /tmp && "$venv/bin/python" - "$here" <<'PY'
import sys, pathlib
import rclpy, rt2_ros, rt2_ros.msg, rt2_ros.action  # noqa: F401
src = pathlib.Path(rt2_ros.__path__[0]).resolve()
want = pathlib.Path(sys.argv[1]).resolve() / "rt2_ros"
if src != want:
    sys.exit(f"error: rt2_ros imports from {src}, expected {want}; delete .venv and rerun")
PY
)
log "ready: $venv (activate with: source .venv/bin/activate)"
