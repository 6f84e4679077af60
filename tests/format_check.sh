#!/usr/bin/env bash
# Checks every C file against .clang-format; one pass or fail per file,
# appended to build/results.txt as the "format" suite.
set -u
mkdir -p build
passed=0
failed=0
for file in $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build/*'); do
    if clang-format --dry-run --Werror "$file" >/dev/null 2>&1; then
        passed=$((passed + 1))
    else
        echo "!! $file is not clang-formatted (run: clang-format -i $file)"
        failed=$((failed + 1))
    fi
done
echo "=== format: $passed passed, $failed failed"
echo "format $passed $failed" >>build/results.txt
[ "$failed" -eq 0 ]
