#!/usr/bin/env bash
# `make gpu-kit`: an offline wheelhouse for the first contact with a GPU box (no network there).
#
#   GPU_KIT     output folder (default .gpu-kit; gitignored)
#   KIT_PYTHON  the interpreter whose version and platform the kit targets (default .venv/bin/python);
#               the GPU box must run the same Python minor version on the same platform
#   KIT_CUDA    the CUDA 13 wheels' version that pycuda is built against (default 13.0.*)
#   KIT_NVCC=1  also carry the nvcc toolchain wheels (~100 MB) for a box without a CUDA toolkit
#
# Layout: core/ (pycuda built here, the project, numpy, pytest: the kernel's GPU tests and
# gpu-check), extra/ (onnxruntime, opencv-python-headless, scipy: the Detector end to end),
# cuda-toolchain/ (KIT_NVCC=1), src/ (this commit's tests and scripts, a small ONNX model),
# SIZES.md. pycuda is compiled against the PyPI CUDA 13 headers (nvidia-cuda-runtime's cuda.h,
# CUDA_ROOT from nvidia-cuda-nvcc + nvidia-nvvm + nvidia-cuda-crt) and linked against a stand-in
# libcuda.so whose SONAME is libcuda.so.1 and which defines nothing: the wheel records
# NEEDED libcuda.so.1 with no RPATH/RUNPATH, so the GPU box's driver library is what loads.
set -euo pipefail

KIT=${GPU_KIT:-.gpu-kit}
PY=${KIT_PYTHON:-.venv/bin/python}
CUDA=${KIT_CUDA:-13.0.*}
PYCUDA=${KIT_PYCUDA:-pycuda==2026.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=$KIT/build
PIP=("$PY" -m pip --disable-pip-version-check)

step() { printf '\n== %s\n' "$*"; }

rm -rf "$KIT/core" "$KIT/extra" "$KIT/cuda-toolchain" "$KIT/src"
mkdir -p "$BUILD" "$KIT/core" "$KIT/extra" "$KIT/src"
BUILD=$(cd "$BUILD" && pwd)

step "CUDA $CUDA headers and nvcc from PyPI"
# cuda.h: nvidia-cuda-runtime; cudaProfiler.h (pycuda includes it): nvidia-cuda-profiler-api
if [ ! -x "$BUILD/cuda/nvidia/cu13/bin/nvcc" ] || [ ! -f "$BUILD/cuda/nvidia/cu13/include/cudaProfiler.h" ]; then
    rm -rf "$BUILD/cuda" "$BUILD/cuda-wheels"
    "${PIP[@]}" download --quiet --no-deps -d "$BUILD/cuda-wheels" \
        "nvidia-cuda-runtime==$CUDA" "nvidia-cuda-nvcc==$CUDA" "nvidia-nvvm==$CUDA" "nvidia-cuda-crt==$CUDA" \
        "nvidia-cuda-profiler-api==$CUDA"
    "${PIP[@]}" install --quiet --no-deps --no-compile --target "$BUILD/cuda" "$BUILD"/cuda-wheels/*.whl
fi
CUDA_ROOT=$BUILD/cuda/nvidia/cu13
test -f "$CUDA_ROOT/include/cuda.h" || { echo "no cuda.h under $CUDA_ROOT/include" >&2; exit 1; }
"$CUDA_ROOT/bin/nvcc" --version | tail -2

step "a stand-in libcuda.so to link against: SONAME libcuda.so.1, every cu* function of cuda.h returning NO_DEVICE"
# (and cudaProfiler.h's)
# Every function cuda.h declares (after its macros: cuMemAlloc is cuMemAlloc_v2), so that the
# linker keeps the dependency (a library defining nothing is dropped under --as-needed) and
# records NEEDED libcuda.so.1; the same library lets the wheel import here for a smoke test.
mkdir -p "$BUILD/stub"
printf '#include <cuda.h>\n#include <cudaProfiler.h>\n' | gcc -E -P -I "$CUDA_ROOT/include" -x c - | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' \
    | tr -d ' (' | sort -u > "$BUILD/stub/symbols"
{
    echo 'int cuGetErrorString(int e, const char** s) { *s = "no CUDA-capable device is detected"; return 0; }'
    echo 'int cuGetErrorName(int e, const char** s) { *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'
    grep -v -x -e cuGetErrorString -e cuGetErrorName "$BUILD/stub/symbols" | sed 's/.*/int &(void) { return 100; }/'
} > "$BUILD/stub/libcuda.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$BUILD/stub/libcuda.so" "$BUILD/stub/libcuda.c"
ln -sf libcuda.so "$BUILD/stub/libcuda.so.1"
echo "$(wc -l < "$BUILD/stub/symbols") driver functions"

step "$PYCUDA from source against those headers"
if ! ls "$BUILD"/pycuda-wheel/pycuda-*.whl >/dev/null 2>&1; then
if [ ! -f "$BUILD/pycuda-src/setup.py" ]; then  # kept between runs: setuptools reuses its build/ objects
    rm -rf "$BUILD/pycuda-sdist" "$BUILD/pycuda-src"
    "${PIP[@]}" download --quiet --no-deps --no-build-isolation --no-binary pycuda -d "$BUILD/pycuda-sdist" "$PYCUDA"
    mkdir -p "$BUILD/pycuda-src"
    tar -xzf "$BUILD"/pycuda-sdist/pycuda-*.tar.gz -C "$BUILD/pycuda-src" --strip-components=1
fi
cat > "$BUILD/pycuda-src/siteconf.py" <<EOF
BOOST_INC_DIR = []
BOOST_LIB_DIR = []
BOOST_COMPILER = "gcc"
USE_SHIPPED_BOOST = True
BOOST_PYTHON_LIBNAME = []
BOOST_THREAD_LIBNAME = []
CUDA_TRACE = False
CUDA_ROOT = "$CUDA_ROOT"
CUDA_ENABLE_GL = False
CUDA_ENABLE_CURAND = False
CUDADRV_LIB_DIR = ["$BUILD/stub"]
CUDADRV_LIBNAME = ["cuda"]
CUDA_INC_DIR = ["$CUDA_ROOT/include"]
CXXFLAGS = []
LDFLAGS = []
EOF
rm -f "$BUILD"/pycuda-src/build/lib*/pycuda/_driver*.so  # relinked against this stand-in
MAKEFLAGS=-j2 "${PIP[@]}" wheel --quiet --no-deps --no-build-isolation -w "$BUILD/pycuda-wheel" "$BUILD/pycuda-src"
fi
cp "$BUILD"/pycuda-wheel/pycuda-*.whl "$KIT/core/"
cp "$BUILD"/pycuda-sdist/pycuda-*.tar.gz "$KIT/core/"  # for a box of another platform (a Jetson: aarch64)

step "the pycuda wheel loads the driver's libcuda.so.1, not a build path"
rm -rf "$BUILD/pycuda-check" && mkdir -p "$BUILD/pycuda-check"
(cd "$BUILD/pycuda-check" && unzip -q "$ROOT/$KIT"/core/pycuda-*.whl 'pycuda/_driver*.so')
DYN=$(readelf -d "$BUILD"/pycuda-check/pycuda/_driver*.so)
echo "$DYN" | grep -q 'NEEDED.*\[libcuda\.so\.1\]' || { echo "pycuda's _driver does not need libcuda.so.1" >&2; exit 1; }
if echo "$DYN" | grep -Eq 'RPATH|RUNPATH'; then echo "pycuda's _driver carries an RPATH/RUNPATH" >&2; exit 1; fi
echo "$DYN" | grep NEEDED

step "the wheel imports here and calls the driver: over the stand-in libcuda.so.1 (every call: NO_DEVICE)"
SMOKE=$BUILD/smoke
rm -rf "$SMOKE"
"${PIP[@]}" install --quiet --no-deps --no-compile --target "$SMOKE/site" "$KIT"/core/pycuda-*.whl
LD_LIBRARY_PATH=$BUILD/stub PYTHONPATH=$SMOKE/site "$PY" -c "
import pycuda.driver as cuda
try:
    cuda.init()
except cuda.Error as exc:
    print('the kit\'s pycuda over the stand-in driver:', type(exc).__name__, exc)
else:
    raise SystemExit('cuInit succeeded over a stand-in driver')
"

step "the project and its test dependencies (core), the Detector's (extra)"
"${PIP[@]}" wheel --quiet --no-deps -w "$KIT/core" .
"${PIP[@]}" download --quiet -d "$KIT/core" "numpy>=1.24" "pytest>=7" "platformdirs" "pytools" "mako" "typing_extensions"
"${PIP[@]}" download --quiet -d "$KIT/extra" "onnxruntime>=1.16" "opencv-python-headless>=4.6" "scipy>=1.9"
# extra's copies of what core already holds go
for wheel in "$KIT"/extra/*; do
    name=$(basename "$wheel")
    if [ -e "$KIT/core/$name" ]; then rm "$wheel"; fi
done

if [ "${KIT_NVCC:-0}" = 1 ]; then
    step "the nvcc toolchain wheels (KIT_NVCC=1)"
    mkdir -p "$KIT/cuda-toolchain"
    cp "$BUILD"/cuda-wheels/*.whl "$KIT/cuda-toolchain/"
fi

step "this commit's tests and scripts, and a small ONNX model"
# tests and scripts only: the package comes from the wheel (a source tree's ssd_edge/ first on
# sys.path would shadow it, and it maps runtime/ and export/ only when installed)
git archive --format=tar.gz -o "$KIT/src/ssd-edge-src.tar.gz" HEAD tests scripts pyproject.toml setup.cfg
if "$PY" -c "import torch" 2>/dev/null; then
    OMP_NUM_THREADS=1 "$PY" -c "
from pathlib import Path; import sys
from tests.helpers.demo import export_demo_model
export_demo_model(Path(sys.argv[1]))" "$KIT/src/demo.onnx"
else
    echo "no torch here: the kit carries no ONNX model (gpu-check's Detector steps will say so)"
fi

step "sizes"
"$PY" - "$KIT" <<'EOF'
import sys
from pathlib import Path

kit = Path(sys.argv[1])
rows, totals = [], {}
for part in ("core", "extra", "cuda-toolchain", "src"):
    for f in sorted((kit / part).glob("*")) if (kit / part).is_dir() else []:
        rows.append((part, f.name, f.stat().st_size))
        totals[part] = totals.get(part, 0) + f.stat().st_size
lines = ["# gpu-kit contents", "", "| part | file | MB |", "|---|---|---:|"]
lines += [f"| {p} | {n} | {s / 1e6:.1f} |" for p, n, s in rows]
lines += ["", "| part | MB |", "|---|---:|"] + [f"| {p} | {s / 1e6:.1f} |" for p, s in totals.items()]
carry = totals.get("core", 0) + totals.get("src", 0)
lines += ["", f"core + src (the kernel's GPU tests, gpu-check): {carry / 1e6:.1f} MB; "
          f"with extra (the Detector end to end): {(carry + totals.get('extra', 0)) / 1e6:.1f} MB"]
(kit / "SIZES.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines[-len(totals) - 4:]))
EOF
cat <<EOF

On the GPU box (no network), with the same Python ($("$PY" -c 'import sys; print(".".join(map(str, sys.version_info[:2])))')):
  python -m venv kit-venv && kit-venv/bin/pip install --no-index --find-links $KIT/core --find-links $KIT/extra \\
      ssd-edge pycuda pytest onnxruntime opencv-python-headless scipy
  mkdir src && tar -xzf $KIT/src/ssd-edge-src.tar.gz -C src && cd src
  ../kit-venv/bin/python scripts/gpu_check.py --out ../gpu-check --model ../$KIT/src/demo.onnx
EOF
