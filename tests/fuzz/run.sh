#!/usr/bin/env bash
# Runs the libFuzzer harnesses built in build/fuzz/.
#
#   run.sh long BINARY...    each for FUZZ_SECONDS (default 60); new inputs go
#                            to build/fuzz/corpus/NAME, then the corpus is
#                            merged down to the inputs that add coverage
#   run.sh smoke BINARY...   for `make check`: every saved regression input
#                            replayed once, then FUZZ_SMOKE_RUNS (default
#                            10000) mutations of the seeds drawn with
#                            FUZZ_SMOKE_SEED (default 1); ends with
#                            "=== fuzz counts: PASSED FAILED"
#
# The smoke round is the same inputs in the same order on every machine,
# busy or idle: a fixed seed and a count, not a time (a time-bound round
# tries fewer inputs on a busy machine, so what it finds would depend on
# the load).  Finding new inputs is `make fuzz`'s job.
#
# One harness at a time: libFuzzer uses one core, and the machine is shared.
# A crash, leak, timeout or broken promise stops that harness; its input is
# saved as build/fuzz/artifacts/NAME/crash-* (or leak-*, timeout-*) and
# belongs, once fixed, in tests/fuzz/regressions/NAME/.
set -u
mode=$1
shift
seconds=${FUZZ_SECONDS:-60}
smoke_runs=${FUZZ_SMOKE_RUNS:-10000}
smoke_seed=${FUZZ_SMOKE_SEED:-1}
passed=0
failed=0
# The harnesses' temporary files: in memory if possible, and gone even when
# a harness crashes before it can clean up.
FUZZ_TMPDIR=$(mktemp -d -p "$([ -w /dev/shm ] && echo /dev/shm || echo /tmp)" forksafe-fuzz.XXXXXX)
export FUZZ_TMPDIR
trap 'rm -rf "$FUZZ_TMPDIR"' EXIT
total_runs=0
status=0

# Options every run shares: the harness's dictionary if it has one, a
# per-input time limit well above any input's normal run time, and where
# failing inputs are saved.
options() {
    local name=$1
    mkdir -p "build/fuzz/artifacts/$name"
    echo -timeout=10 -artifact_prefix="build/fuzz/artifacts/$name/"
    if [ -f "tests/fuzz/$name.dict" ]; then
        echo -dict="tests/fuzz/$name.dict"
    fi
}

# Inputs of the regression directory (none is fine).
regressions() {
    local name=$1
    if [ -d "tests/fuzz/regressions/$name" ]; then
        find "tests/fuzz/regressions/$name" -type f | sort
    fi
}

run_long() {
    local binary=$1 name corpus log merged runs coverage
    name=$(basename "$binary")
    corpus=build/fuzz/corpus/$name
    log=build/fuzz/$name.log
    mkdir -p "$corpus"
    echo "--- $name: fuzzing for ${seconds}s (log: $log)"
    # shellcheck disable=SC2046
    "$binary" $(options "$name") -max_total_time="$seconds" -print_final_stats=1 \
        "$corpus" "tests/fuzz/corpus/$name" >"$log" 2>&1
    local rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    coverage=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
    runs=${runs:-0}
    total_runs=$((total_runs + runs))
    if [ "$rc" -ne 0 ]; then
        grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz: broken promise|artifact_prefix|Test unit written)' \
            "$log" | head -n 8
        echo "!! $name: failed (exit $rc) after $runs executions; see $log"
        status=1
        return
    fi
    # Keep only inputs that add coverage, seeds included, so the corpus
    # stays small however long it is fuzzed.
    merged=$(mktemp -d)
    if "$binary" -merge=1 "$merged" "$corpus" "tests/fuzz/corpus/$name" >"$log.merge" 2>&1; then
        rm -rf "$corpus"
        mv "$merged" "$corpus"
    else
        rm -rf "$merged"
        echo "!! $name: merging the corpus failed; see $log.merge"
        status=1
    fi
    echo "$name: $runs executions, $coverage, corpus $(find "$corpus" -type f | wc -l) inputs"
}

run_smoke() {
    local binary=$1 name input scratch log
    name=$(basename "$binary")
    log=$(mktemp)
    while read -r input; do
        [ -n "$input" ] || continue
        if "$binary" "$input" >"$log" 2>&1; then
            passed=$((passed + 1))
        else
            cat "$log"
            echo "!! $name: regression input $input fails again"
            failed=$((failed + 1))
        fi
    done < <(regressions "$name")
    # The seeds are read from git's copy; what the run finds goes to a
    # scratch directory, so the smoke round never changes the tree.
    scratch=$(mktemp -d)
    # shellcheck disable=SC2046
    if "$binary" $(options "$name") -seed="$smoke_seed" -runs="$smoke_runs" -print_final_stats=1 \
        "$scratch" "tests/fuzz/corpus/$name" >"$log" 2>&1; then
        echo "$name: $(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)" \
            "executions (seed $smoke_seed), clean"
        passed=$((passed + 1))
    else
        tail -n 40 "$log"
        echo "!! $name: the smoke round failed; the input is in build/fuzz/artifacts/$name/"
        failed=$((failed + 1))
    fi
    rm -rf "$scratch" "$log"
}

case "$mode" in
long)
    for binary in "$@"; do
        run_long "$binary"
    done
    echo "fuzz: $total_runs executions in total over $# harnesses"
    exit "$status"
    ;;
smoke)
    if [ $# -eq 0 ]; then
        echo "!! no harness was built"
        failed=1
    fi
    for binary in "$@"; do
        run_smoke "$binary"
    done
    echo "=== fuzz counts: $passed $failed"
    [ "$failed" -eq 0 ]
    ;;
*)
    echo "usage: $0 long|smoke BINARY..." >&2
    exit 2
    ;;
esac
