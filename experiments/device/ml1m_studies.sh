#!/bin/bash
# Run ON the device machine (a GPU; issue 17: ml1m's studies need one), from the repository root, after
# experiments/device/prepare.sh ran here; the run tool's call:
#   run(command="bash experiments/device/ml1m_studies.sh", carry=[".data", ".whl"], timeout_s=560)
# Each model's Optuna study (the published budget: 20 trials of 40 epochs, batch 8192) runs in its own
# process, all at once on the one GPU, until BUDGET seconds; a study keeps every finished trial in
# experiments/ml1m/tuned/<model>.study.db, so the next lent session resumes it (a trial cut off runs again).
# What comes back: $OUT/ml1m-tuned.tar.gz (the study DBs, tuning.json/.md and tuned configs of finished studies)
# and one log per model. Here: tar xzf /work/.device/.../ml1m-tuned.tar.gz, check, commit.
set -u
BUDGET=${BUDGET:-420}
MODELS=${MODELS:-"bprmf lightgcn lightgcn-cikg simgcl kgat kgat-mf cikgrec"}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import optuna" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CIKG_DATA=${CIKG_DATA:-$PWD/.data}
# fail in seconds, not minutes, when the image lacks something
python3 -c "import optuna, torch, torch_geometric, cikg.train.tune; print('torch', torch.__version__, \
  'cuda', torch.cuda.is_available())" || exit 4
for model in $MODELS; do
  timeout -s INT "$BUDGET" python3 experiments/tune.py ml1m --models "$model" --trials 20 \
    --set train.batch_size=8192 train.device="$DEVICE" train.threads=2 train.progress=false --publish \
    > "$OUT/tune-$model.log" 2>&1 &
done
wait
for model in $MODELS; do echo "$model: $(grep -c 'trial .* \(complete\|pruned\)' "$OUT/tune-$model.log") trials"; done
kept=$(ls -d experiments/ml1m/tuned experiments/ml1m/tuning.json experiments/ml1m/tuning.md 2>/dev/null)
[ -n "$kept" ] && tar czf "$OUT/ml1m-tuned.tar.gz" $kept
