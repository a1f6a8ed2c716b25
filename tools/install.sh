#!/usr/bin/env bash
# One-command install of mmslak and its pinned OpenMMLab 2.x stack into a virtual environment.
#
#   bash tools/install.sh            # creates/updates .venv in the repository root
#   MMSLAK_VENV=/path/venv bash tools/install.sh
#
# The slow part is mmcv 2.1.0: PyPI has no binary wheel for it, so it is compiled from source with its
# C++ ops (12-25 minutes on 2 cores). The built wheel is cached under $MMSLAK_CACHE keyed by the torch
# version it was compiled against, because a wheel built against another torch fails to import.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMSLAK_VENV:-$ROOT/.venv}
CACHE=${MMSLAK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmslak}
PYTHON=${PYTHON:-python3.11}
TORCH_SPEC=${MMSLAK_TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_VERSION=2.1.0
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f

START=$SECONDS
step() { printf '\n[install %4ds] %s\n' $((SECONDS - START)) "$*"; }

step "virtual environment: $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --progress-bar off)
# setuptools<82 stays installed: mmcv's setup.py and mmengine's `mmdet::` config scopes use pkg_resources.
"${PIP[@]}" -q --upgrade pip 'setuptools<82' wheel ninja

step "PyTorch ($TORCH_SPEC)"
# shellcheck disable=SC2086
"${PIP[@]}" -q $TORCH_SPEC
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')
step "torch $TORCH_VERSION installed"

step "runtime dependencies"
"${PIP[@]}" -q 'mmengine==0.10.7' 'numpy' 'opencv-python' 'pycocotools' 'shapely' 'scipy' 'ftfy' 'regex' \
  'pytest' 'hypothesis' 'matplotlib' 'prettytable' 'terminaltables' 'onnx' 'onnxruntime' 'onnxscript' 'model-index'

WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION/torch-$TORCH_VERSION"
mmcv_ok() { "$PY" -c "import mmcv; assert mmcv.__version__ == '$MMCV_VERSION'; from mmcv.ops import nms, RoIAlign" 2>/dev/null; }
if mmcv_ok; then
  step "mmcv $MMCV_VERSION with ops already installed"
else
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    step "building mmcv $MMCV_VERSION with its C++ ops against torch $TORCH_VERSION (12-25 min on 2 cores)"
    echo "  why: PyPI has no mmcv $MMCV_VERSION wheel for this torch; the result is cached in $WHEEL_DIR"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    # pip fetches the sdist, so a configured index, mirror or proxy (pip.conf, PIP_INDEX_URL) is honoured;
    # the checksum still pins the exact file. --no-build-isolation: pip prepares the sdist's metadata with
    # the setuptools installed above instead of fetching another one.
    "$PY" -m pip download -q --no-binary :all: --no-deps --no-build-isolation --dest "$BUILD" "mmcv==$MMCV_VERSION"
    SDIST="$BUILD/mmcv-$MMCV_VERSION.tar.gz"
    echo "$MMCV_SDIST_SHA256  $SDIST" | sha256sum -c --quiet
    tar -xzf "$SDIST" -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.14 needs C++20 (ATen uses it); mmcv 2.1.0 hard-codes -std=c++17.
    if "$PY" -c 'import sys, torch; sys.exit(0 if tuple(map(int, torch.__version__.split("+")[0].split(".")[:2])) >= (2, 14) else 1)'; then
      sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
      echo "  patched mmcv setup.py: -std=c++17 -> -std=c++20"
    fi
    (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel --no-build-isolation --no-deps -w "$BUILD/dist" . >"$BUILD/build.log" 2>&1) &
    BUILD_PID=$!
    # a CPU build compiles the generic and the CPU kernels, not the CUDA/MLU/NPU/MPS ones
    TOTAL=$(find "$SRC/mmcv/ops/csrc/pytorch" -maxdepth 2 -name '*.cpp' \( -path '*/pytorch/*.cpp' -o -path '*/cpu/*' \) \
            | grep -cv -e /cuda/ -e /mlu/ -e /npu/ -e /mps/)
    while kill -0 "$BUILD_PID" 2>/dev/null; do
      sleep 30
      DONE=$(find "$BUILD" -path '*build*' -name '*.o' 2>/dev/null | wc -l)
      printf '  [%4ds] compiling mmcv ops: %s of %s C++ files done\n' $((SECONDS - START)) "$DONE" "$TOTAL"
    done
    if ! wait "$BUILD_PID"; then
      tail -40 "$BUILD/build.log"
      echo "mmcv build failed; full log above ($BUILD/build.log)" >&2
      exit 1
    fi
    mkdir -p "$WHEEL_DIR"
    cp "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/"
  fi
  step "installing cached mmcv wheel from $WHEEL_DIR"
  "${PIP[@]}" -q --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl
  "${PIP[@]}" -q addict packaging Pillow pyyaml yapf
  mmcv_ok || { echo "mmcv installed but 'from mmcv.ops import nms' fails" >&2; exit 1; }
fi

step "mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0"
"${PIP[@]}" -q 'mmdet==3.3.0' 'mmsegmentation==1.2.2' 'mmpretrain==1.2.0' 'mmcv==2.1.0' "setuptools<82"

step "mmslak (compiles mmslak._ext, the C++ CPU kernels)"
# setup.py builds what this machine and compiler support (x86-64: AVX2 / AVX-512 / AVX512-BF16 kernel
# builds when the compiler knows them, a portable one everywhere; OpenMP when available). If the
# extension cannot be built at all, mmslak is installed without it and the ops run on PyTorch (slower;
# each op says so once). MMSLAK_REQUIRE_EXT=1 (CI) makes that an install failure instead.
EXT_LOG="$CACHE/mmslak-ext-build.log"
mkdir -p "$CACHE"
if ! "${PIP[@]}" -v --no-build-isolation -e "$ROOT" >"$EXT_LOG" 2>&1; then
  grep -E "error|Error" "$EXT_LOG" | head -20 || true
  echo "mmslak._ext (the C++ CPU kernels) could not be built; compiler output above, full log: $EXT_LOG" >&2
  if [ "${MMSLAK_REQUIRE_EXT:-}" = 1 ]; then
    echo "MMSLAK_REQUIRE_EXT=1: failing the install" >&2
    exit 1
  fi
  echo "installing mmslak without it: the depthwise and peripheral ops fall back to PyTorch" >&2
  MMSLAK_NO_EXT=1 "${PIP[@]}" -q --no-build-isolation -e "$ROOT"
fi
grep "mmslak._ext: " "$EXT_LOG" || true  # what setup.py left out on this machine, and why

# tests/ops/test_cpu_portability.py cross-compiles the C++ sources for aarch64 with Debian's
# g++-aarch64-linux-gnu; installed here when this runs as root on a machine with apt-get.
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && [ "$(uname -m)" = x86_64 ]; then
  step "g++-aarch64-linux-gnu (aarch64 cross compiler for the portability test of the C++ kernels)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu; } \
      >"$CACHE/apt-cross-compiler.log" 2>&1; then
    echo "  could not install it (log: $CACHE/apt-cross-compiler.log); the aarch64 test will say so" >&2
  fi
fi

step "checking the installed stack"
"$PY" -c "import mmslak, mmdet, mmseg, mmpretrain, mmcv.ops, torch; print('mmslak', mmslak.__version__, '| torch', torch.__version__, '| mmcv', mmcv.__version__)"
step "done: activate with 'source $VENV/bin/activate'"
