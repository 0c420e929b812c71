#!/usr/bin/env bash
# Print the path of a CPython interpreter for one leg of the test matrix.
#   find-python.sh 3.9 [STAGE_DIR]    the newest pyenv 3.9.x, else python3.9 on PATH, else python3
#   find-python.sh 3.13 [STAGE_DIR]   likewise for 3.13
# A fallback is announced on stderr, so `make test` says which interpreter stands in for a missing one.
#
# Some tests drop to an unprivileged user (nobody) and run the programs with the same interpreter.
# pyenv keeps its interpreters under root's home, which other users cannot enter, so such an
# interpreter is staged first: its executable, libpython and standard library are copied to
# STAGE_DIR/pythonX.Y (default .build/pythonX.Y; only when the source changed), and the copy
# finds its libpython next to itself (patchelf, Debian's package, sets RUNPATH to $ORIGIN/../lib).
set -euo pipefail
want=${1:?usage: find-python.sh MAJOR.MINOR [STAGE_DIR]}
stage_root=${2:-.build}
root=${PYENV_ROOT:-$HOME/.pyenv}

stage() {  # stage PREFIX: print the staged interpreter of the installation at PREFIX
    local prefix=$1 dest stamp
    dest=$(mkdir -p "$stage_root" && cd "$stage_root" && pwd)/python$want
    stamp="$prefix $(stat -c %Y "$prefix/bin/python$want")"
    if [ ! -x "$dest/bin/python$want" ] || [ "$(cat "$dest/.source" 2>/dev/null)" != "$stamp" ]; then
        echo "find-python: staging $prefix in $dest (readable by every user)" >&2
        rm -rf "$dest.tmp"
        mkdir -p "$dest.tmp/bin" "$dest.tmp/lib"
        cp -p "$prefix/bin/python$want" "$dest.tmp/bin/"
        ln -s "python$want" "$dest.tmp/bin/python3"
        ln -s "python$want" "$dest.tmp/bin/python"
        cp -a "$prefix"/lib/libpython"$want"*.so* "$dest.tmp/lib/" 2>/dev/null || true
        # The standard library without its test suite and without the base site-packages.
        (cd "$prefix/lib" && tar -cf - --exclude="python$want/test" --exclude="python$want/site-packages/*" \
            "python$want") | tar -xf - -C "$dest.tmp/lib"
        patchelf --set-rpath '$ORIGIN/../lib' "$dest.tmp/bin/python$want"
        chmod -R a+rX "$dest.tmp"
        echo "$stamp" >"$dest.tmp/.source"
        rm -rf "$dest"
        mv "$dest.tmp" "$dest"
    fi
    echo "$dest/bin/python$want"
}

reachable() {  # reachable FILE: can an unprivileged user get to FILE (every directory on its path)?
    local dir
    dir=$(dirname "$1")
    while [ "$dir" != / ]; do
        [ "$(( 0$(stat -c %a "$dir") & 1 ))" -eq 1 ] || return 1
        dir=$(dirname "$dir")
    done
}

best=$(ls -d "$root"/versions/"$want".* 2>/dev/null | grep -E "/$want\.[0-9]+$" | sort -V | tail -n 1 || true)
if [ -n "$best" ] && [ -x "$best/bin/python$want" ]; then
    if reachable "$best/bin/python$want"; then
        echo "$best/bin/python$want"
    else
        stage "$best"
    fi
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
