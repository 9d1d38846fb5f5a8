#!/usr/bin/env bash
# The best system that fits in 60 minutes on a 2-core CPU (docs/RESULTS.md, "The 60-minute system"):
# configs/best.yaml at four seeds, two at a time (one per core, one thread each), then their ensemble (the
# members' probabilities and scores averaged, minbert ensemble). The dev and test prediction files of the ensemble
# are in OUT/ensemble/predictions.
#   scripts/best-system.sh [OUT]          # default runs/system; run it again to resume where it stopped
# Quora numbers with the embedded checkpoint are optimistic: it was trained on pairs that include Quora duplicates.
set -euo pipefail
out=${1:-runs/system}
cores=$(nproc)
start=$(date +%s)
mkdir -p "$out"

seed() {  # seed $1 on core $2: trained, resumed from its last checkpoint, or left as it is when finished
  local dir=$out/seed$1
  if [ -f "$dir/summary.json" ]; then
    return
  elif [ -f "$dir/last.json" ]; then
    taskset -c "$2" minbert train --resume "$dir"
  else
    # no checkpoint yet: a fresh start (--overwrite clears a start that stopped before its first checkpoint)
    taskset -c "$2" minbert train configs/best.yaml seed="$1" threads=1 out="$dir" --overwrite
  fi
}

for pair in "1 2" "3 4"; do
  set -- $pair
  seed "$1" 0 > "$out/seed$1.log" 2>&1 &
  a=$!
  seed "$2" $((cores > 1 ? 1 : 0)) > "$out/seed$2.log" 2>&1 &
  b=$!
  wait $a
  wait $b
  echo "seeds $1 and $2 done at $(($(date +%s) - start)) s"
done
minbert ensemble "$out"/seed1 "$out"/seed2 "$out"/seed3 "$out"/seed4 --out "$out/ensemble" --overwrite
echo "wall time $(($(date +%s) - start)) s (this sitting)"
