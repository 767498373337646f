# Source this file (`. tools/cuda-toolkit.sh [--link]`) to build the CUDA features on a machine
# without a system CUDA toolkit or GPU (CI, a laptop, a build box). It installs NVIDIA's own PyPI
# wheels of the CUDA 13.0 toolkit into .cache/cuda-toolkit (once; later calls reuse it) and
# exports what candle's and cudarc's build scripts read:
#   CUDA_ROOT / CUDA_PATH / CUDA_TOOLKIT_ROOT_DIR  the toolkit root (bin/nvcc, include/, lib/)
#   CUDA_COMPUTE_CAP                                 the GPU generation to compile for (default 90:
#                                                    H100/H200; 80 for A100, 89 for L4/4090)
#   PATH                                             nvcc first
# Every version is pinned. nvidia-nvvm in particular: an unpinned one emits PTX ISA 9.5, which
# the 13.0 ptxas and a CUDA 13.0 driver (580) both refuse.
#
# --link also installs the runtime libraries a linked build (`cargo build`, not `check`) needs:
# cuBLAS, cuRAND, NVRTC and cuDNN, plus a link-time stub of libcuda.so.1 (the driver library,
# which NVIDIA ships only with the driver). The binary then runs on any machine with driver >= 580
# and those libraries on LD_LIBRARY_PATH (the torch wheels of CUDA 13 carry them).
#
# Needs python3 with pip and a C compiler (for the stub). Nothing is installed system-wide.

_cuda_toolkit_main() {
    local repo_root link=0 arg
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    for arg in "$@"; do
        case "$arg" in
            --link) link=1 ;;
            *) echo "cuda-toolkit.sh: unknown option $arg (use --link)" >&2; return 2 ;;
        esac
    done
    local dest="${HEADSHOT_CUDA_TOOLKIT:-$repo_root/.cache/cuda-toolkit}"
    local python="${PYTHON:-python3}"
    # The wheels are py3-none-manylinux (x86-64 Linux); --no-deps: each one is listed here.
    local pip=("$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps
        --only-binary=:all: --target)
    local compile_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)
    local link_wheels=(nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
        nvidia-cuda-nvrtc==13.0.88 nvidia-cudnn-cu13==9.13.0.50)
    local root="$dest/site/nvidia/cu13"

    if [[ ! -x $root/bin/nvcc ]]; then
        echo "cuda-toolkit.sh: installing the CUDA 13.0 compiler wheels into $dest" >&2
        "${pip[@]}" "$dest/site" "${compile_wheels[@]}" || return 1
    fi
    if [[ $link == 1 && ! -e $dest/.linked ]]; then
        echo "cuda-toolkit.sh: installing cuBLAS, cuRAND, NVRTC and cuDNN wheels" >&2
        # Its own target: pip --target skips a top-level folder (nvidia/) that already exists.
        "${pip[@]}" "$dest/runtime" "${link_wheels[@]}" || return 1
        _cuda_toolkit_link_folder "$dest" "$root" "$repo_root" || return 1
        touch "$dest/.linked"
    fi

    export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    # nvcc finds its NVVM (cicc, libdevice) through nvcc.profile relative to bin/.
    export PATH="$root/bin:$PATH"
    if [[ $link == 1 ]]; then
        # Where the linker finds -lcuda (the stub), -lcublas, ...: cudarc's build script adds
        # $CUDA_ROOT/lib{,64}; the link folder gathers every wheel's library there.
        # (LIBRARY_PATH, not RUSTFLAGS: it does not invalidate the build cache.)
        export LIBRARY_PATH="$dest/link${LIBRARY_PATH:+:$LIBRARY_PATH}"
    fi
    echo "cuda-toolkit.sh: CUDA_ROOT=$CUDA_ROOT CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP ($(nvcc --version | tail -1))" >&2
}

# One folder with the unversioned names the linker wants (libcublas.so -> libcublas.so.13, ...)
# and a stub libcuda.so.1. The stub defines every driver symbol the binaries use: an empty stub
# would be dropped from NEEDED by --as-needed and the binary would fail at load time.
_cuda_toolkit_link_folder() {
    local dest="$1" root="$2" repo_root="$3" lib name
    mkdir -p "$dest/link"
    for lib in "$dest"/runtime/nvidia/*/lib/lib*.so.* "$root"/lib/lib*.so.*; do
        [[ -e $lib ]] || continue
        name="$(basename "$lib")"
        ln -sf "$lib" "$dest/link/$name"
        ln -sf "$lib" "$dest/link/${name%%.so.*}.so"
    done
    # The driver functions cudarc (the CUDA layer under candle) declares, read from the very
    # version Cargo.lock pins; each stub returns CUDA_ERROR_STUB_LIBRARY (34) if ever called,
    # which it is not: the driver's real libcuda.so.1 is found at run time.
    local cudarc_version sys
    cudarc_version="$(awk '/^name = "cudarc"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$repo_root/Cargo.lock")"
    (cd "$repo_root" && cargo fetch --quiet) || return 1
    sys="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$cudarc_version"/src/driver/sys/mod.rs | head -1)"
    [[ -f $sys ]] || { echo "cuda-toolkit.sh: cudarc $cudarc_version sources not found" >&2; return 1; }
    grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$sys" | sort -u \
        | awk '{print "int " $4 "(void) { return 34; }"}' > "$dest/link/cuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dest/link/libcuda.so.1" "$dest/link/cuda_stub.c" || return 1
    ln -sf libcuda.so.1 "$dest/link/libcuda.so"
}

_cuda_toolkit_main "$@"
