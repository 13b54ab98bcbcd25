#!/bin/bash
# Run HERE (not on the device machine), once per machine, before experiments/device/ml1m_studies.sh:
# the device machine reaches no network and gets only the repository, so this puts beside it (ignored by git,
# sent with the run tool's `carry`) what it lacks: ml1m's files (.data/ml1m) and Optuna with the packages
# Optuna needs that its image does not hold (.whl/, wheels for its Python 3.12).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${CIKG_DATA:-../shared/data}
mkdir -p .data .whl
rm -rf .data/ml1m && cp -r "$DATA/ml1m" .data/ml1m && chmod -R u+w .data/ml1m
for spec in optuna==5.1.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec"
done
du -sh .data .whl
