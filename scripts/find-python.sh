#!/usr/bin/env bash
# Print the path of a CPython interpreter for one leg of the test matrix.
#   find-python.sh 3.9    the newest pyenv 3.9.x, else python3.9 on PATH, else python3 (with a warning)
#   find-python.sh 3.13   likewise for 3.13
# The warning goes to stderr, so `make test` says which interpreter stands in for a missing one.
set -euo pipefail
want=${1:?usage: find-python.sh MAJOR.MINOR}
root=${PYENV_ROOT:-$HOME/.pyenv}

best=$(ls -d "$root"/versions/"$want".* 2>/dev/null | grep -E "/$want\.[0-9]+$" | sort -V | tail -n 1 || true)
if [ -n "$best" ] && [ -x "$best/bin/python" ]; then
    echo "$best/bin/python"
    exit 0
fi
if command -v "python$want" >/dev/null 2>&1; then
    command -v "python$want"
    exit 0
fi
fallback=$(command -v python3)
echo "find-python: no Python $want (neither $root/versions/$want.* nor python$want on PATH);" \
     "using $fallback ($("$fallback" -c 'import platform; print(platform.python_version())')) instead" >&2
echo "$fallback"
