#!/usr/bin/env bash
# Prepares the accelerator suite's device run (docs/accelerator.md): run it
# here, in the repository root, before the device tool's `run`.
#
#   bash scripts/accelerator_prepare.sh
#
# Writes two ignored folders that the run carries (carry=[".whl", ".accel"]):
#   .whl/          wheels of what the device machine lacks or has in another
#                  version (it has transformers 5, which has no Flax models):
#                  transformers 4.57.6, tokenizers 0.22.2, huggingface-hub
#                  0.36.2, ml-collections 1.1.0 (CPython 3.12, x86-64).
#   .accel/data/   the shared data the suite reads ($JAX_DISSECT_SHARED_DATA
#                  there): concepts/20k.txt and clip_bpe/bpe_simple_vocab_
#                  16e6.txt.gz, copied from ../shared/data (or
#                  $JAX_DISSECT_SHARED_DATA here).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
data="${JAX_DISSECT_SHARED_DATA:-../shared/data}"
python="${PYTHON:-python3}"

rm -rf .whl
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2 \
  ml-collections==1.1.0

rm -rf .accel
mkdir -p .accel/data/concepts .accel/data/clip_bpe
cp "$data/concepts/20k.txt" .accel/data/concepts/
cp "$data/clip_bpe/bpe_simple_vocab_16e6.txt.gz" .accel/data/clip_bpe/

# Both must be ignored (else they travel as untracked files, not carried).
git check-ignore -q .whl && git check-ignore -q .accel || {
  echo "error: .whl/ or .accel/ is not ignored; add them to .gitignore" >&2
  exit 1
}
du -sh .whl .accel
ls .whl
