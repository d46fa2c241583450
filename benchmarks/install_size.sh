#!/usr/bin/env bash
# Install size and time of two commits side by side (docs/benchmarks.md, "Install size and time").
#
#   benchmarks/install_size.sh OLD_REF [NEW_REF]     (NEW_REF defaults to HEAD)
#
# Each commit is exported with git archive to /tmp/nl-old and /tmp/nl-new and installed,
# non-editable, into fresh venvs /tmp/venv-{old,new}-{default,dev} outside the repository, one
# at a time, with the CMAKE_ARGS of scripts/bootstrap (so pip's cached llama-cpp-python wheel
# is reused). One unmeasured install of each side first fills pip's HTTP cache. Prints one
# line per install: wall seconds of `pip install` alone and `du -sm` of the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
old_ref=${1:?usage: benchmarks/install_size.sh OLD_REF [NEW_REF]}
new_ref=${2:-HEAD}
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"

for side in old new; do
    ref=$old_ref; [[ $side == new ]] && ref=$new_ref
    rm -rf "/tmp/nl-$side" && mkdir -p "/tmp/nl-$side"
    git archive "$ref" | tar -x -C "/tmp/nl-$side"
done

measure() {  # name spec
    local venv=/tmp/venv-$1
    rm -rf "$venv" && python3 -m venv "$venv"
    local start end
    start=$(date +%s.%N)
    "$venv/bin/pip" install -q "$2" > "$venv.log" 2>&1
    end=$(date +%s.%N)
    local torch=no
    "$venv/bin/python" -c "import torch" 2>/dev/null && torch=yes
    printf '%-12s %-22s wall %4.0f s  venv %5d MB  packages %3d  torch %s\n' "$1" "$2" \
        "$(echo "$end - $start" | bc)" "$(du -sm "$venv" | cut -f1)" \
        "$("$venv/bin/pip" list 2>/dev/null | tail -n +3 | wc -l)" "$torch"
}

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)," \
    "$(python3 --version), old $old_ref, new $new_ref"
measure warm-old '/tmp/nl-old[dev]' >/dev/null  # fills pip's cache: not measured
measure warm-new '/tmp/nl-new[dev]' >/dev/null
rm -rf /tmp/venv-warm-old /tmp/venv-warm-new
measure old-default /tmp/nl-old
measure new-default /tmp/nl-new
measure old-dev '/tmp/nl-old[dev]'
measure new-dev '/tmp/nl-new[dev]'
