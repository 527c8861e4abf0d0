#!/usr/bin/env bash
# Runs a binary packed by `cargo xtask cuda-build --pack DIR` on a GPU machine that has no Rust:
# finds the CUDA 13 libraries (the driver through ldconfig; cuBLAS, cuRAND, NVRTC, cuDNN under a
# PyTorch venv or the usual system folders, never a toolkit stub or compat copy), exports
# LD_LIBRARY_PATH, unpacks NAME.xz next to this script (once) and runs it with the arguments.
#
#   bash run.sh gyre --device cuda bench --model resnet18 --batch 256
#   bash run.sh test-kernels            # the kernel tests, on the CPU and on CUDA device 0
#   GYRE_LIB_ROOTS="/opt/torch/.venv /usr/local/cuda" bash run.sh gyre ...
set -u
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
name="${1:?usage: run.sh NAME [ARGS...] (NAME.xz lies next to run.sh)}"
shift
bin="$here/$name"
if [ ! -x "$bin" ]; then
  [ -f "$bin.xz" ] || { echo "run.sh: no $bin.xz" >&2; exit 2; }
  # The folder may be read-only: unpack into a temporary folder then.
  if ! { xz -dc "$bin.xz" > "$bin" 2>/dev/null || python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$bin.xz" > "$bin"; } 2>/dev/null; then
    bin="${TMPDIR:-/tmp}/gyre-run.$$.$name"
    xz -dc "$here/$name.xz" > "$bin" 2>/dev/null ||
      python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$here/$name.xz" > "$bin"
  fi
  chmod +x "$bin"
fi

need=(libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudnn.so.9)
roots=(${GYRE_LIB_ROOTS:-/opt/torch/.venv /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu /usr/local/cuda /usr/local/cuda-13* /opt/conda/lib})
existing=()
for r in "${roots[@]}"; do [ -e "$r" ] && existing+=("$r"); done
dirs=""
add_dir() { case ":$dirs:" in *":$1:"*) ;; *) dirs="${dirs:+$dirs:}$1" ;; esac; }
ldconfig_bin=$(command -v ldconfig || echo /sbin/ldconfig)
for lib in "${need[@]}"; do
  f=""
  [ "$lib" = libcuda.so.1 ] && f=$("$ldconfig_bin" -p 2>/dev/null | awk -v l="$lib" '$1==l && /x86-64/ {print $NF; exit}')
  [ -z "$f" ] && [ ${#existing[@]} -gt 0 ] && f=$(find -L "${existing[@]}" -maxdepth 9 -name "$lib" \( -type f -o -type l \) 2>/dev/null |
    grep -v -e /stubs/ -e /compat/ | head -1)
  if [ -n "$f" ]; then echo "run.sh: found $lib -> $f" >&2; add_dir "$(dirname "$f")"; else echo "run.sh: missing $lib" >&2; fi
done
export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.used,memory.total --format=csv,noheader >&2
exec "$bin" "$@"
