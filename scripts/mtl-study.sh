#!/usr/bin/env bash
# Issue 43's study (docs/RESULTS.md, "Multitask methods"): configs/study/realistic-weighting.yaml (the loss
# weightings, EMA, temperature mixing; annealed) and realistic-aggregators.yaml (the gradient aggregators;
# round-robin), each family seed by seed so that a partial study already holds its variants at their first seeds (the
# weightings at all three seeds before the aggregators), and between the two the soups of the weighting runs beside
# their ensembles. Resumable: the same command continues it. Run it pinned to one core, from a fixed commit:
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
# one model from many (docs/RESULTS.md): soups, uniform and greedy on dev, each beside the ensemble of the same runs -
# of the weighting study's variants at seed 1 (one initialization, different settings: Wortsman et al.'s recipe) and
# of the baseline's three seeds (different heads' initializations)
W=runs/study/realistic-weighting
one_model_from() {  # NAME RUN...: runs/study/soups/NAME/{uniform,greedy,ensemble}, each skipped where it is done
    local out=runs/study/soups/$1
    shift
    [ -f "$out/uniform/summary.json" ] || python -m minbert soup "$@" --out "$out/uniform" --overwrite
    [ -f "$out/greedy/summary.json" ] || python -m minbert soup "$@" --greedy --out "$out/greedy" --overwrite
    [ -f "$out/ensemble/summary.json" ] || python -m minbert ensemble "$@" --out "$out/ensemble" --overwrite
}
one_model_from variants-seed1 $W/{baseline,uw,dwa,rlw,imtl-l,db-mtl,famo,famo@time,ema,temperature-2}/seed1
one_model_from baseline-seeds $W/baseline/seed{1,2,3}
for seed in 1 2 3; do
    python -m minbert sweep configs/study/realistic-aggregators.yaml --seeds "$seed"
done
