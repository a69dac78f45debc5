#!/bin/bash
# On the GPU machine: start one group of K nets in the background (it outlives the call that
# starts it, until the machine goes back).  usage: start.sh NAME EPOCHS BATCH 'JSON configs'
# [more torch_recipe_proxy.py options, e.g. --widths 40,80,160,320 --amp].  Each model's
# probabilities go to /tmp/proxy/NAME_probs.npz (for soft_labels.py).
set -euo pipefail
mkdir -p /tmp/proxy
PYTHONUNBUFFERED=1 setsid nohup python3 "$(dirname "$0")/torch_recipe_proxy.py" \
    --configs "$4" --epochs "$2" --batch "$3" --out "/tmp/proxy/$1.json" \
    --probs-out "/tmp/proxy/$1_probs.npz" "${@:5}" \
    >"/tmp/proxy/$1.log" 2>&1 </dev/null &
