#!/usr/bin/env bash
# Build msg/ and action/ into the pip-mode venv with plain cmake (no colcon, no ROS install).
#
# The ros-kilted-* wheels ship CMake config files written on their build host,
# which point at /opt/python/cp311-cp311 for the Python and numpy headers; they
# are rewritten to this venv's paths first.  The generated Python package is
# installed into its own directory (not site-packages/rt2_ros, which would
# shadow the editable sources) and joins the hand-written package through
# pkgutil.extend_path in rt2_ros/__init__.py.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
py="$venv/bin/python"
build="$here/build/pip_interfaces"
gen_dir="lib/rt2_ros_interfaces"   # relative to the venv prefix

py_inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$py" -c 'import numpy; print(numpy.get_include())')"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# 1. Point the wheels' CMake files at this venv's headers (idempotent).
{ grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311/' "$venv/share" 2>/dev/null || true; } \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g"

# 2. Configure, build, install into the venv prefix.
mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$venv/bin:$PATH"
export LD_LIBRARY_PATH="$venv/lib$(for d in "$site"/ros_*.libs; do printf ':%s' "$d"; done)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DPYTHON_INSTALL_DIR="$gen_dir" \
  -DRT2_ROS_INSTALL_PYTHON_SOURCES=OFF \
  -DBUILD_TESTING=OFF >"$build.configure.log" 2>&1 \
  || { mkdir -p "$build"; tail -40 "$build.configure.log" >&2; echo "cmake configure failed (full log: $build.configure.log)" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build.build.log" 2>&1 \
  || { tail -40 "$build.build.log" >&2; echo "interface build failed (full log: $build.build.log)" >&2; exit 1; }
cmake --install "$build" >"$build.install.log" 2>&1 \
  || { tail -40 "$build.install.log" >&2; echo "interface install failed" >&2; exit 1; }

# ament_python_install_package also writes rt2_ros-*.egg-info; pip would take it
# for a second installed "rt2_ros" distribution and delete the generated package
# when the editable sources are (re)installed.  The metadata is not needed.
rm -rf "$venv/$gen_dir"/rt2_ros-*.egg-info

# 3. Put the generated package on sys.path after the editable sources
#    ("zz" sorts after setuptools' "__editable__" .pth files).
echo "$venv/$gen_dir" > "$site/zz_rt2_ros_interfaces.pth"
echo "built rt2_ros interfaces into $venv/$gen_dir"
