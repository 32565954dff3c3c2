#!/bin/sh
# Installs a lock file of this folder into the environment of PIP, every file checked against the lock's hashes
# (decision 77). Used by `make install` and the Dockerfile, so both install the same way.
#
#   requirements/install.sh PIP LOCK [TORCH_SPEC]
#
# PIP         the pip to run (.venv/bin/pip, or pip in the image)
# LOCK        requirements/test.txt (`make install`) or requirements/runtime.txt (the image, `make run`)
# TORCH_SPEC  empty: the lock's own torch (the CPU build, hash-checked like everything else). Otherwise a torch
#             requirement (a GPU build, e.g. torch==2.13.0 for PyPI's CUDA build): every other entry of the lock is
#             installed hash-checked, then this torch with what it needs, NOT hash-checked (a GPU torch is not in
#             the lock: it cannot be resolved on the machines that make the lock).
set -eu
pip=$1
lock=$2
torch_spec=${3:-}
if [ -z "$torch_spec" ]; then
    "$pip" install --require-hashes --no-deps -r "$lock"
else
    # The lock without its torch entry: the torch== line and its indented --hash/# via lines, up to the next entry.
    without_torch=$(mktemp)
    trap 'rm -f "$without_torch"' EXIT
    sed '/^torch==/,/^[^ ]/{/^torch==/d;/^ /d;}' "$lock" > "$without_torch"
    "$pip" install --require-hashes --no-deps -r "$without_torch"
    "$pip" install "$torch_spec"
fi
