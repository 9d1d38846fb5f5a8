#!/usr/bin/env bash
# Issue 43's study (docs/RESULTS.md, "Multitask methods and one model"), in parts, each its own process so that two
# cores take two parts (each pinned to its core), from a fixed commit in a worktree:
#   git worktree add ../study43 HEAD && cd ../study43
#   PYTHONPATH=src nohup taskset -c 0 scripts/mtl-study.sh weighting > weighting.log 2>&1 &
#   PYTHONPATH=src nohup taskset -c 1 scripts/mtl-study.sh soups > soups.log 2>&1 &
# - weighting: configs/study/realistic-weighting.yaml (the loss weightings, EMA, temperature mixing; annealed), seed
#   by seed so that a partial study already holds its variants at their first seeds; SEEDS="1 2" and ONLY=a,b (its
#   variants) split it between processes. FAMO runs there at seed 1 alone: an annealed step holds one task, which
#   FAMO has nothing to compare with (realistic-weighting.yaml's note); it is studied in the aggregators' part.
# - aggregators: configs/study/realistic-aggregators.yaml (the gradient aggregators; round-robin), the same way.
# - soups: one model from many, each soup (uniform, greedy on dev) beside the ensemble of the same runs: of the
#   weighting variants at seed 1 (one initialization, ten settings: Wortsman et al.'s recipe), of the eight variants
#   trained at every seed, at each seed (the same recipe three times: a mean and a spread), and of the baseline's
#   three seeds; and the averages of one run's last 2 and 3 epochs (`keep-epochs`, the baseline's training with its
#   epochs kept), at each seed; each where its runs are on this machine with their weights. It trains nothing.
# Run folders do not outlive their machine: every finished run is kept in docs/study (`minbert sweep --record`:
# docs/study/realistic-weighting/VARIANT/seedK/, each soup's summary in docs/study/soups/NAME/KIND/) and a sweep
# restores its runs from there, so the study goes on where the record ends; commit docs/study as runs finish. A soup
# needs its ingredients' weights, which the record does not keep: `SEEDS=1 RESTORE=0 scripts/mtl-study.sh weighting`
# trains the seed-1 runs on this machine even where the record has them (ONLY splitting them between the two
# cores), then keeps them; `SEEDS="2 3" RESTORE=0 ONLY=baseline` the baseline's other two seeds, and `RESTORE=0
# ONLY=keep-epochs` the runs whose last epochs are averaged.
# The tables: minbert sweep configs/study/realistic-weighting.yaml --report (and realistic-aggregators.yaml)
set -euo pipefail
# jemalloc where installed (`apt install libjemalloc2`): the same numbers, a faster step (benchmarks/RESULTS.md,
# "allocator"); MINBERT_ALLOCATOR=glibc to run without it
export MINBERT_ALLOCATOR=${MINBERT_ALLOCATOR:-jemalloc}
SEEDS=${SEEDS:-1 2 3}
R=docs/study
W=runs/study/realistic-weighting
VARIANTS=(baseline uw dwa rlw imtl-l db-mtl famo famo@time ema temperature-2)
ACTING=(baseline uw dwa rlw imtl-l db-mtl ema temperature-2)  # the variants at every seed (FAMO: seed 1 alone)
KEEP=keep-epochs  # the baseline again, its epochs kept: averages of its last epochs (soups), at every seed

sweep() {  # FILE [ONLY after seed 1]: seed by seed, kept in the record and restored from it (RESTORE=0: trained
    # here, then kept); ONLY=a,b, where given, for every seed
    local seed only
    for seed in $SEEDS; do
        only=${ONLY:-}
        [ -z "$only" ] && [ "$seed" != 1 ] && only=${2:-}
        if [ "${RESTORE:-1}" = 0 ]; then
            python -m minbert sweep "$1" --seeds "$seed" ${only:+--only "$only"}
            python -m minbert sweep "$1" --seeds "$seed" ${only:+--only "$only"} --report --record "$R"
        else
            python -m minbert sweep "$1" --seeds "$seed" ${only:+--only "$only"} --record "$R"
        fi
    done
}

soup_of() {  # NAME RUN...: uniform and greedy soups and the ensemble of RUN... in runs/study/soups/NAME, each kept
    local name=$1 out=runs/study/soups/$1 kind
    shift
    for kind in uniform greedy ensemble; do
        recorded "$name" "$kind" && continue
        case $kind in
            uniform) python -m minbert soup "$@" --out "$out/$kind" --overwrite ;;
            greedy) python -m minbert soup "$@" --greedy --out "$out/$kind" --overwrite ;;
            ensemble) python -m minbert ensemble "$@" --out "$out/$kind" --overwrite ;;
        esac
        keep "$name" "$kind"
    done
}

keep() {  # NAME KIND: the summary of runs/study/soups/NAME/KIND into the record
    mkdir -p "$R/soups/$1/$2"
    cp "runs/study/soups/$1/$2/summary.json" "$R/soups/$1/$2/"
}

last_epochs_if_here() {  # NAME RUN: the averages of RUN's last 2 and 3 epochs (`soup --last K`), each kept
    local name=$1 run=$2 k
    recorded "$name" last2 last3 && return
    if ! here "$run"; then
        echo "$name: $run is not here with its weights; it waits for it (RESTORE=0, above)"
        return
    fi
    for k in 2 3; do
        recorded "$name" "last$k" && continue
        python -m minbert soup "$run" --last "$k" --out "runs/study/soups/$name/last$k" --overwrite
        keep "$name" "last$k"
    done
}

recorded() {  # NAME KIND...: every KIND of the soup NAME is in the record already
    local name=$1 kind
    shift
    for kind in "$@"; do [ -f "$R/soups/$name/$kind/summary.json" ] || return 1; done
}

here() {  # RUN: a finished run with its weights on this machine
    [ -d "$1/checkpoints" ] && [ -f "$1/summary.json" ]
}

soup_if_here() {  # NAME RUN...: soup_of where every RUN is here, else one line saying what it waits for
    local name=$1 run missing=0
    shift
    recorded "$name" uniform greedy ensemble && return
    for run in "$@"; do here "$run" || missing=$((missing + 1)); done
    if [ "$missing" = 0 ]; then
        soup_of "$name" "$@"
    else
        echo "$name: $missing of its $# runs are not here with their weights; it waits for them (RESTORE=0, above)"
    fi
}

case "${1:-}" in
    weighting)  # famo and famo@time at seed 1 alone: a control, and two of the seed-1 soup's runs (the file's note)
        sweep configs/study/realistic-weighting.yaml "$(IFS=,; echo "${ACTING[*]},$KEEP")"
        ;;
    aggregators) sweep configs/study/realistic-aggregators.yaml ;;
    soups)
        runs=()
        for v in "${VARIANTS[@]}"; do runs+=("$W/$v/seed1"); done
        soup_if_here variants-seed1 "${runs[@]}"
        soup_if_here baseline-seeds "$W/baseline/seed1" "$W/baseline/seed2" "$W/baseline/seed3"
        for seed in 1 2 3; do  # the same recipe at each seed (the eight variants trained at every seed): a mean
            runs=()
            for v in "${ACTING[@]}"; do runs+=("$W/$v/seed$seed"); done
            soup_if_here "variants8-seed$seed" "${runs[@]}"
            last_epochs_if_here "last-epochs-seed$seed" "$W/$KEEP/seed$seed"
        done
        ;;
    *)
        echo "usage: scripts/mtl-study.sh weighting|aggregators|soups (SEEDS=\"1 2 3\", ONLY=a,b for the sweeps)" >&2
        exit 2
        ;;
esac
