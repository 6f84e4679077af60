#!/usr/bin/env bash
# Prints one line per suite and the closing "N passed, N failed" over all.
set -u
results=${1:-build/results.txt}
passed=0
failed=0
if [ ! -s "$results" ]; then
    echo "no suite ran"
    echo "0 passed, 1 failed"
    exit 1
fi
failures=$(dirname "$results")/failures.txt
if [ -s "$failures" ]; then
    echo "failed tests:"
    head -n 40 "$failures" | sed 's/^/  /'
fi
while read -r suite p f; do
    printf '  %-22s %5d passed %5d failed\n' "$suite" "$p" "$f"
    passed=$((passed + p))
    failed=$((failed + f))
done <"$results"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
