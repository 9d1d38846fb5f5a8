#!/usr/bin/env bash
# Issue 43's study (docs/RESULTS.md, "Multitask methods"): configs/study/realistic-weighting.yaml (the loss
# weightings, EMA, temperature mixing; annealed) and realistic-aggregators.yaml (the gradient aggregators;
# round-robin), each family seed by seed so that a partial study already holds its variants at their first seeds (the
# weightings at all three seeds before the aggregators). Resumable: the
# same command continues it. Run it pinned to one core, from a fixed commit:
#   git worktree add ../study43 HEAD && cd ../study43
#   PYTHONPATH=src nohup taskset -c 1 scripts/mtl-study.sh > study.log 2>&1 &
# The tables: minbert sweep configs/study/realistic-weighting.yaml --report (and realistic-aggregators.yaml)
set -euo pipefail
# jemalloc where installed (`apt install libjemalloc2`): the same numbers, a faster step (benchmarks/RESULTS.md,
# "allocator"); MINBERT_ALLOCATOR=glibc to run without it
export MINBERT_ALLOCATOR=${MINBERT_ALLOCATOR:-jemalloc}
# the loss weightings at all three seeds first (the methods issue 43 names first to try), then the aggregators
for seed in 1 2 3; do
    python -m minbert sweep configs/study/realistic-weighting.yaml --seeds "$seed"
done
for seed in 1 2 3; do
    python -m minbert sweep configs/study/realistic-aggregators.yaml --seeds "$seed"
done
