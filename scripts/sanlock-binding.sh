#!/usr/bin/env bash
# Expose Debian's python3-sanlock binding, and nothing else of Debian's dist-packages, to a virtualenv.
#   scripts/sanlock-binding.sh [VENV]     (default .venv)
# Makes VENV/sanlock-binding/ holding a symbolic link to Debian's compiled `sanlock` module and lists
# that directory in a .pth file of the venv's site-packages. The module is compiled for Debian's
# python3 ABI (bookworm: CPython 3.11): a venv on another minor version cannot load it, and this
# script then says so and exits 0 without linking (the sanlock tests run on the matching venv only).
set -euo pipefail
venv=${1:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || { echo "sanlock-binding: no virtualenv at $venv" >&2; exit 1; }
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
dir="$(cd "$venv" && pwd)/sanlock-binding"
rm -rf "$dir" "$site/ftagent-sanlock-binding.pth"
module=""
for d in /usr/lib/python3/dist-packages /usr/lib64/python3*/site-packages; do
    [ -e "$d/sanlock$suffix" ] && { module="$d/sanlock$suffix"; break; }
done
if [ -z "$module" ]; then
    found=$(ls /usr/lib/python3/dist-packages/sanlock.*.so 2>/dev/null || true)
    if [ -z "$found" ]; then
        echo "sanlock-binding: Debian's python3-sanlock is not installed (scripts/install-deps.sh all)" >&2
        exit 1
    fi
    echo "sanlock-binding: $found is not for this Python ($suffix): not linked; the sanlock tests" \
         "run on a venv built on the matching Python only" >&2
    exit 0
fi
mkdir -p "$dir"
ln -s "$module" "$dir/"
echo "$dir" > "$site/ftagent-sanlock-binding.pth"
"$py" -c 'import sanlock' && echo "sanlock-binding: $module -> $dir (listed in $site/ftagent-sanlock-binding.pth)"
