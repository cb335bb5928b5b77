#!/usr/bin/env bash
# The accelerator suite on the device machine (docs/accelerator.md): run by
# the device tool's `run`, in the repository root, with carry=[".whl",
# ".accel"] written here first by scripts/accelerator_prepare.sh:
#
#   bash scripts/accelerator_device.sh [PRESET [LIMIT_S [--set=key=value...]]]
#
# PRESET: full (default) or tiny; LIMIT_S: the benchmark's hard limit in
# seconds (default 450: with the machine's start the call stays inside an
# 8-minute run; the preset stops starting phases at its budget_s before).
# Installs the carried wheels into /tmp/site (ahead of the machine's own
# packages), points JAX_DISSECT_SHARED_DATA at the carried .accel/data,
# lets JAX allocate device memory as it needs it (the suite's phases run in
# processes of their own), then writes into $OUT (default /tmp/accel_out):
# accelerator.jsonl (the records), log.txt (everything printed) and
# table.md (the table of docs/accelerator.md), and prints the table.
set -u
preset="${1:-full}"
limit="${2:-450}"
shift $(( $# < 2 ? $# : 2 ))
out="${OUT:-/tmp/accel_out}"
py="${PYTHON:-python3}"
mkdir -p "$out"
if ls .whl/*.whl > /dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PYTHONPATH"
if [ -d .accel/data ]; then
  export JAX_DISSECT_SHARED_DATA="$PWD/.accel/data"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi -L 2> /dev/null
"$py" -c "import jax, flax, transformers; print('jax', jax.__version__, \
'flax', flax.__version__, 'transformers', transformers.__version__, \
jax.devices())" || exit 1
timeout "$limit" "$py" scripts/benchmark.py --suite=accelerator \
  --preset="$preset" --output="$out/accelerator.jsonl" "$@" \
  > "$out/log.txt" 2>&1
rc=$?
echo "benchmark exit status $rc (124: stopped at its ${limit} s limit)"
if [ -s "$out/accelerator.jsonl" ]; then
  "$py" -m benchmarks.accelerator "$out/accelerator.jsonl" \
    | tee "$out/table.md"
fi
grep -E "Traceback|Error|error" "$out/log.txt" | tail -n 20
exit $rc
