#!/usr/bin/env bash
# Runs one test suite and appends "SUITE PASSED FAILED" to build/results.txt.
#   run_suite.sh unit|asan|valgrind BINARY...   Check binaries
#   run_suite.sh fuzz BINARY...          libFuzzer harnesses, short round (tests/fuzz/run.sh)
#   run_suite.sh NAME DIRECTORY          Python unittest files test_*.py in DIRECTORY
#   run_suite.sh NAME DIRECTORY MODULE...   only those modules of DIRECTORY
# A suite that cannot run at all counts as one failure, never as zero tests.
set -u
suite=$1
shift
PYTHON=${PYTHON:-/usr/bin/python3}
results=build/results.txt
# What failed, by name, so the end of a long CI log says which test it was.
failure_log=build/failures.txt
mkdir -p build
passed=0
failed=0

run_check_binary() {
    local binary=$1 log
    log=$(mktemp)
    if [ "$suite" = valgrind ]; then
        # No fork: valgrind must see the tests themselves.
        CK_FORK=no valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect "$binary" >"$log" 2>&1
    else
        # Check's 4 s default per test is a bound a busy machine can hit
        # with a test that only waits on states; test cases that need
        # more set their own.
        CK_FORK=yes CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-20} "$binary" >"$log" 2>&1
    fi
    local status=$?
    if [ "$status" -eq 99 ]; then
        echo "!! valgrind reported errors in $binary"
        echo "$suite: valgrind reported errors in $binary" >>"$failure_log"
        failed=$((failed + 1))
    fi
    cat "$log"
    grep -E '^[^:]+:[0-9]+:[FE]:' "$log" | sed "s|^|$suite: |" >>"$failure_log"
    local line
    line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
    rm -f "$log"
    if [ -z "$line" ]; then
        echo "!! $binary printed no Check summary (exit $status)"
        echo "$suite: $binary printed no Check summary (exit $status)" >>"$failure_log"
        failed=$((failed + 1))
        return
    fi
    local checks failures errors
    checks=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
    failures=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
    errors=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
    passed=$((passed + checks - failures - errors))
    failed=$((failed + failures + errors))
}

run_python_dir() {
    local dir=$1 log
    shift
    log=$(mktemp)
    if ! ls "$dir"/test_*.py >/dev/null 2>&1; then
        echo "!! $dir has no test_*.py"
        failed=$((failed + 1))
        return
    fi
    if [ $# -gt 0 ]; then
        (cd "$dir" && "$PYTHON" -m unittest -v "$@") >"$log" 2>&1
    else
        (cd "$dir" && "$PYTHON" -m unittest discover -v -p 'test_*.py') >"$log" 2>&1
    fi
    cat "$log"
    grep -E '^(FAIL|ERROR): ' "$log" | sed "s|^|$suite: |" >>"$failure_log"
    local ran fails errors skipped
    ran=$(grep -E '^Ran [0-9]+ tests?' "$log" | tail -n 1 | sed -E 's/^Ran ([0-9]+).*/\1/')
    if [ -z "$ran" ]; then
        echo "!! $dir: unittest printed no result"
        echo "$suite: $dir: unittest printed no result" >>"$failure_log"
        failed=$((failed + 1))
        rm -f "$log"
        return
    fi
    fails=$(grep -oE 'failures=[0-9]+' "$log" | tail -n 1 | cut -d= -f2)
    errors=$(grep -oE 'errors=[0-9]+' "$log" | tail -n 1 | cut -d= -f2)
    skipped=$(grep -oE 'skipped=[0-9]+' "$log" | tail -n 1 | cut -d= -f2)
    fails=${fails:-0}
    errors=${errors:-0}
    skipped=${skipped:-0}
    passed=$((passed + ran - fails - errors - skipped))
    failed=$((failed + fails + errors))
    rm -f "$log"
}

# One pass per harness that runs clean and per regression input replayed.
run_fuzz_binaries() {
    local log line
    log=$(mktemp)
    tests/fuzz/run.sh smoke "$@" >"$log" 2>&1
    cat "$log"
    grep -E '^!! ' "$log" | sed "s|^!! |$suite: |" >>"$failure_log"
    line=$(grep -E '^=== fuzz counts: [0-9]+ [0-9]+$' "$log" | tail -n 1)
    rm -f "$log"
    if [ -z "$line" ]; then
        echo "!! tests/fuzz/run.sh printed no counts"
        failed=$((failed + 1))
        return
    fi
    passed=$((passed + $(cut -d' ' -f4 <<<"$line")))
    failed=$((failed + $(cut -d' ' -f5 <<<"$line")))
}

echo "=== suite: $suite"
if [ "$suite" = unit ] || [ "$suite" = asan ] || [ "$suite" = valgrind ]; then
    for binary in "$@"; do
        run_check_binary "$binary"
    done
elif [ "$suite" = fuzz ]; then
    run_fuzz_binaries "$@"
else
    run_python_dir "$@"
fi
echo "=== $suite: $passed passed, $failed failed"
echo "$suite $passed $failed" >>"$results"
[ "$failed" -eq 0 ]
