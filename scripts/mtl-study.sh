#!/usr/bin/env bash
# Issue 43's study (docs/RESULTS.md, "Multitask methods and one model"), in parts, each its own process so that two
# cores take two parts (each pinned to its core), from a fixed commit in a worktree:
#   git worktree add ../study43 HEAD && cd ../study43
#   PYTHONPATH=src nohup taskset -c 0 scripts/mtl-study.sh weighting > weighting.log 2>&1 &
#   PYTHONPATH=src nohup taskset -c 1 scripts/mtl-study.sh soups > soups.log 2>&1 &
# - weighting: configs/study/realistic-weighting.yaml (the loss weightings, EMA, temperature mixing; annealed), seed
#   by seed so that a partial study already holds its variants at their first seeds; SEEDS="1 2" and ONLY=a,b (its
#   variants) split it between processes.
# - aggregators: configs/study/realistic-aggregators.yaml (the gradient aggregators; round-robin), the same way.
# - soups: one model from many, each soup (uniform, greedy on dev) beside the ensemble of the same runs: of the
#   baseline's three seeds, and of the weighting variants at seed 1 where those runs are on this machine.
# Run folders do not outlive their machine: every finished run is kept in docs/study (`minbert sweep --record`:
# docs/study/realistic-weighting/VARIANT/seedK/, each soup's summary in docs/study/soups/NAME/KIND/) and a sweep
# restores its runs from there, so the study goes on where the record ends; commit docs/study as runs finish. A soup
# needs its ingredients' weights, which the record does not keep, so the soups' part trains the baseline's seeds it
# lacks (the same config as the weighting study's baseline) and builds the variants' soup only where all ten seed-1
# runs are here with their checkpoints: `SEEDS=1 RESTORE=0 scripts/mtl-study.sh weighting` trains them on this
# machine even where the record has them (ONLY splitting them between the two cores), then keeps them.
# The tables: minbert sweep configs/study/realistic-weighting.yaml --report (and realistic-aggregators.yaml)
set -euo pipefail
# jemalloc where installed (`apt install libjemalloc2`): the same numbers, a faster step (benchmarks/RESULTS.md,
# "allocator"); MINBERT_ALLOCATOR=glibc to run without it
export MINBERT_ALLOCATOR=${MINBERT_ALLOCATOR:-jemalloc}
SEEDS=${SEEDS:-1 2 3}
R=docs/study
W=runs/study/realistic-weighting
VARIANTS=(baseline uw dwa rlw imtl-l db-mtl famo famo@time ema temperature-2)

sweep() {  # FILE: seed by seed, kept in the record and restored from it (RESTORE=0: trained here, then kept)
    for seed in $SEEDS; do
        if [ "${RESTORE:-1}" = 0 ]; then
            python -m minbert sweep "$1" --seeds "$seed" ${ONLY:+--only "$ONLY"}
            python -m minbert sweep "$1" --seeds "$seed" ${ONLY:+--only "$ONLY"} --report --record "$R"
        else
            python -m minbert sweep "$1" --seeds "$seed" ${ONLY:+--only "$ONLY"} --record "$R"
        fi
    done
}

soup_of() {  # NAME RUN...: uniform and greedy soups and the ensemble of RUN... in runs/study/soups/NAME, each kept
    local name=$1 out=runs/study/soups/$1 kind
    shift
    for kind in uniform greedy ensemble; do
        [ -f "$R/soups/$name/$kind/summary.json" ] && continue
        case $kind in
            uniform) python -m minbert soup "$@" --out "$out/$kind" --overwrite ;;
            greedy) python -m minbert soup "$@" --greedy --out "$out/$kind" --overwrite ;;
            ensemble) python -m minbert ensemble "$@" --out "$out/$kind" --overwrite ;;
        esac
        mkdir -p "$R/soups/$name/$kind"
        cp "$out/$kind/summary.json" "$R/soups/$name/$kind/"
    done
}

baseline_run() {  # K: the baseline's seed-K run with its weights: the weighting study's where it is here, else one
    # trained for the soups (the same config)
    local run=$W/baseline/seed$1
    if [ -d "$run/checkpoints" ] && [ -f "$run/summary.json" ]; then
        echo "$run"
    else
        echo "runs/study/soups/baseline-seeds/seed$1"
    fi
}

train_baseline() {  # K: trains (or resumes) the soups' own seed-K baseline run unless a finished one is here
    local run
    run=$(baseline_run "$1")
    if [ -f "$run/summary.json" ]; then
        return
    elif [ -f "$run/last.json" ]; then
        python -m minbert train --resume "$run"
    else
        rm -rf "$run"
        python -m minbert train configs/best.yaml max_minutes=0 precision=bf16 threads=1 "seed=$1" "out=$run"
    fi
}

case "${1:-}" in
    weighting) sweep configs/study/realistic-weighting.yaml ;;
    aggregators) sweep configs/study/realistic-aggregators.yaml ;;
    soups)
        kept=$R/soups/baseline-seeds
        if ! { [ -f "$kept/uniform/summary.json" ] && [ -f "$kept/greedy/summary.json" ] \
            && [ -f "$kept/ensemble/summary.json" ]; }; then
            for k in 1 2 3; do train_baseline "$k"; done
            soup_of baseline-seeds "$(baseline_run 1)" "$(baseline_run 2)" "$(baseline_run 3)"
        fi
        runs=()
        for v in "${VARIANTS[@]}"; do
            [ -d "$W/$v/seed1/checkpoints" ] && [ -f "$W/$v/seed1/summary.json" ] && runs+=("$W/$v/seed1")
        done
        if [ ${#runs[@]} -eq ${#VARIANTS[@]} ]; then
            soup_of variants-seed1 "${runs[@]}"
        else
            echo "variants-seed1: ${#runs[@]} of the ${#VARIANTS[@]} seed-1 weighting runs are here with their" \
                "weights; that soup waits for all (SEEDS=1 RESTORE=0 scripts/mtl-study.sh weighting, on this machine)"
        fi
        ;;
    *)
        echo "usage: scripts/mtl-study.sh weighting|aggregators|soups (SEEDS=\"1 2 3\", ONLY=a,b for the sweeps)" >&2
        exit 2
        ;;
esac
