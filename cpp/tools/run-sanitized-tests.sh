#!/usr/bin/env bash
# Build a separate AddressSanitizer + UndefinedBehaviorSanitizer copy of itp._native (CMake option
# ITP_SANITIZE=ON) and run tests against it. The editable build (build/) and the installed package are
# never touched: the sanitized extension goes into its own build directory and is imported from a copy
# of itp/ put first on the path, with site processing off so the editable install's finder cannot win.
#
# Usage (from anywhere):  cpp/tools/run-sanitized-tests.sh [pytest args...]
#   default pytest args: the native-core tests (replay, ring, sum tree, state, actions, stubs).
#   ITP_SANITIZE_DIR     work directory (default /tmp/itp-sanitize): build/ and pkg/ inside.
#
# Why the environment: a Python extension built with ASan needs the ASan runtime loaded before the
# interpreter starts (LD_PRELOAD), and libstdc++ preloaded too so ASan can intercept __cxa_throw
# (pybind11 turns C++ exceptions into Python ones). Leak detection is off: CPython keeps objects alive
# until exit by design. UBSan aborts on the first finding (-fno-sanitize-recover=undefined in CMake).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${ITP_SANITIZE_DIR:-/tmp/itp-sanitize}"
python="${PYTHON:-python}"

cmake -S "$repo" -B "$work/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DITP_SANITIZE=ON \
  -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" \
  -DPython_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$work/build" --target _native

rm -rf "$work/pkg"
mkdir -p "$work/pkg"
cp -r "$repo/itp" "$work/pkg/itp"
find "$work/pkg" -name __pycache__ -prune -exec rm -rf {} +
cp "$work"/build/_native*.so "$work/pkg/itp/"

site="$("$python" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"] + ":" + p["platlib"])')"
if [ "$#" -eq 0 ]; then
  set -- tests/test_replay.py tests/test_ring.py tests/test_sum_tree.py tests/test_state.py \
    tests/test_actions.py tests/test_native_stubs.py -q
fi

cd "$repo"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$work/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/ubsan"
export PYTHONPATH="$work/pkg:$site"
rm -f "$work"/asan.* "$work"/ubsan.*
status=0
# -S: no site processing (the editable install's .pth finder would import the normal build); '' (the
# current directory, i.e. the source tree without any extension) is dropped from sys.path for the same
# reason. -p no:cacheprovider: nothing written to the repository.
"$python" -S -c '
import sys
sys.path = [p for p in sys.path if p not in ("", ".")]
import itp._native
assert itp._native.__file__.startswith(sys.argv[1]), itp._native.__file__
import pytest
sys.exit(pytest.main(["-p", "no:cacheprovider", *sys.argv[2:]]))
' "$work/pkg" "$@" || status=$?
if ls "$work"/asan.* "$work"/ubsan.* >/dev/null 2>&1; then
  echo "sanitizer reports:" >&2
  cat "$work"/asan.* "$work"/ubsan.* >&2 2>/dev/null || true
  status=1
fi
exit "$status"
