#!/bin/bash
# Issue 17's compute still pending on the CPU, as two lanes for a 2-core machine (one torch thread each).
# Every step resumes: a study from its committed tuned/<model>.study.db, a sweep with --missing skips the rows
# its ledger already holds (a row lands when all its seeds end; a seed's run dir resumes on the same machine).
# Re-run it in each session from the repository root; commit the ledgers, pages and study DBs as they land
# (experiments/NOTES.md, "Tuned protocol"); stop it with Ctrl-C or SIGTERM to this script's own pid (both lanes end
# with it). Not to a lane's python: started in the background by a script, it ignores SIGINT (as every background
# job of a non-interactive shell does), and a lane killed on its own leaves its python running.
#   bash experiments/pending.sh            # both lanes, logs in runs/pending/
#   LANES=2 bash experiments/pending.sh    # one lane only
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS="0 1 2 3 4"
RUN="--set train.threads=1 train.progress=false --publish"
CHEAP="bprmf lightgcn lightgcn-cikg simgcl"  # the models whose 20-trial study takes minutes, not hours
# the studies whose best value lay at an edge of their range, run again over the widened ranges (tune.py --restart
# starts each once; later calls resume the new study); their rows then replace the rows of the first studies
WIDENED_DBBOOK="bprmf lightgcn lightgcn-cikg simgcl"
WIDENED_BX="lightgcn lightgcn-cikg kgin"
mkdir -p runs/pending

lane1() {  # dbbook2014: the widened studies and their tuned rows, KGAT (BPR-MF init)'s study and row (tune.py first
  # trains the BPR-MF it starts from), the ablations, KGIN's widened study and row, then the augmentation tables
  # again with a ledger (their CTR columns; the same commands as the published pages)
  $PY experiments/tune.py dbbook2014 --models $WIDENED_DBBOOK --restart $WIDENED_DBBOOK --trials 20 $RUN &&
  $PY experiments/run.py dbbook2014 --tuned --models $WIDENED_DBBOOK cikgrec --seeds $SEEDS --missing --replace $RUN &&
  $PY experiments/tune.py dbbook2014 --models kgat-mf --trials 20 $RUN &&
  $PY experiments/run.py dbbook2014 --tuned --models kgat-mf --seeds $SEEDS --missing $RUN &&
  $PY experiments/run.py dbbook2014 --tuned --ablations --seeds $SEEDS --missing $RUN &&
  $PY experiments/tune.py dbbook2014 --models kgin --restart kgin --trials 20 $RUN &&
  $PY experiments/run.py dbbook2014 --tuned --models kgin --seeds $SEEDS --missing --replace $RUN &&
  $PY experiments/augment.py dbbook2014 --methods none kar kar+gate reki-col:10 reki-col:50 reki-col:50+gate \
    reki-col:200 reki-both:50 reki-col-llm:10 reki-col-llm:50 llmcf coco --models lightgcn cikgrec --seeds 0 1 2 \
    --threads 1 --publish &&
  $PY experiments/augment.py book-crossing --methods none kar kar+gate reki-col:50 reki-col:50+gate reki-both:50 \
    reki-col-llm:50 llmcf coco --models lightgcn cikgrec --seeds 0 1 2 --threads 1 --publish
}

lane2() {  # book-crossing: the cheap studies (the widened ones again) and their tuned rows first (rows land within
  # a session), then the KG models' (KGAT (BPR-MF init) included) and CIKGRec's studies, all tuned rows, the ablations
  $PY experiments/tune.py book-crossing --models $CHEAP --restart $WIDENED_BX --trials 20 $RUN &&
  $PY experiments/run.py book-crossing --tuned --models $CHEAP --seeds $SEEDS --missing --replace $RUN &&
  $PY experiments/tune.py book-crossing --restart $WIDENED_BX --trials 20 $RUN &&
  $PY experiments/run.py book-crossing --tuned --seeds $SEEDS --missing $RUN &&
  $PY experiments/run.py book-crossing --tuned --ablations --seeds $SEEDS --missing $RUN
}

stop() {  # each lane's running step, then the lane itself
  for lane in $(jobs -p); do pkill -TERM -P "$lane"; kill -TERM "$lane" 2>/dev/null; done
  wait; exit 130
}
trap stop INT TERM
for lane in ${LANES:-1 2}; do
  lane$lane > "runs/pending/lane$lane.log" 2>&1 &
done
wait
