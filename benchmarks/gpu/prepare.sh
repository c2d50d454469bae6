#!/usr/bin/env bash
# Prepare the GPU check (benchmarks/gpu/check.sh) on the machine you work on, once per checkout: the Python
# packages the GPU machine's image lacks (as cp312 wheels) and the 650 Places365 JPEGs of the attack assets, in
# .gpu/ (git-ignored through .git/info/exclude, never committed; about 40 MB: what is carried must stay under 64).
# Then, on the GPU machine, from the repository root with .gpu carried along:  bash benchmarks/gpu/check.sh [SECONDS]
#
#   bash benchmarks/gpu/prepare.sh [ASSETS_DIR]     # default ../shared/data/corruptencoder-assets
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
assets=${1:-../shared/data/corruptencoder-assets}
if [ ! -d "$assets/backgrounds-places365" ]; then
  echo "error: $assets/backgrounds-places365 not found; pass the attack assets' folder as the first argument" >&2
  exit 2
fi
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/places
# The versions this checkout is tested with; the GPU image has torch, torchvision, lightning, numpy, Pillow,
# PyYAML and tqdm of its own (benchmarks/gpu/check.sh prints their versions).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing_extensions==4.16.0 lightly==1.6.0
cp "$assets"/backgrounds-places365/*.jpg .gpu/places/
echo "prepared .gpu: $(ls .gpu/whl | wc -l) wheels, $(ls .gpu/places | wc -l) JPEGs, $(du -sh .gpu | cut -f1)"
