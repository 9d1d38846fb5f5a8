#!/usr/bin/env bash
# The reports' claims study (docs/REPORTS.md): the rows each claim compares, from configs/reports/NNN.yaml, every run
# bounded to the same number of optimizer steps (STEPS, default 1,000), bf16 and one thread, seed by seed so that a
# partial study already holds every row at its first seeds. Resumable: the same command continues it (finished runs
# are kept, an interrupted one resumes from its last checkpoint). Run it pinned to one core, from a fixed commit:
#   git worktree add ../study HEAD && cd ../study
#   PYTHONPATH=src nohup taskset -c 0 scripts/report-study.sh > study.log 2>&1 &
# Two cores: one process per core, each on its own seeds (SEEDS="1 2" on core 0, SEEDS=3 on core 1).
# The tables: minbert sweep configs/reports/NNN.yaml --budget 1000 --seeds 1 2 3 --only ROWS --report
set -euo pipefail
# jemalloc where installed (`apt install libjemalloc2`): the same numbers, a faster step (benchmarks/RESULTS.md,
# "allocator"); MINBERT_ALLOCATOR=glibc to run without it
export MINBERT_ALLOCATOR=${MINBERT_ALLOCATOR:-jemalloc}
STEPS=${STEPS:-1000}
SEEDS=${SEEDS:-1 2 3}
# --record: each finished run's config.yaml, summary.json and metrics.jsonl kept in the study's record, the folder the
# tables are computed from on any clone (run folders do not outlive their machine; commit it as runs finish), and on a
# machine without the run folders restored from it, so that the study continues where the record ends
sweep() {
    python -m minbert sweep "configs/reports/$1.yaml" --budget "$STEPS" --seeds "$2" --only "$3" \
        --record docs/study/reports/record precision=bf16 threads=1
}
# pass 1: the rows the claims compare (docs/study/reports/claims.yaml) of reports 000, 002, 003 and 004, seed by seed;
# pass 2: report 001's (SMART costs about three steps per step, the staged rows 25 dev evaluations): the rows of its
# claims on SMART and Bregman first (one sweep call per row, so that the order is this one), round robin's last;
# pass 3: the rows that explain a verdict (002's `general`) and the tables' other rows
for seed in $SEEDS; do
    sweep 004 "$seed" dynamic-0-0.05,static-0,gradient-surgery,baseline
    sweep 000 "$seed" multitask-mse,multitask,multitask-cos,multitask-mse-mnr
    sweep 003 "$seed" naive,cosine,gradvac,pals
    sweep 002 "$seed" v2-pcgrad,v1-cosine,v3-cosine-pcgrad,v2-dropout0.8
done
for seed in $SEEDS; do
    sweep 001 "$seed" annealed
    sweep 001 "$seed" annealed-smart15
    sweep 001 "$seed" mnrl-sst,mnrl-annealed-smart15-25ep,mnrl-bregman-mu1-beta0.9  # a staged chain: one call
    sweep 001 "$seed" baseline
    sweep 001 "$seed" baseline-smart
done
for seed in $SEEDS; do
    sweep 002 "$seed" general,v2-dropout0.5
done
