#!/usr/bin/env bash
# Stage 9 of the demo model (issue 19): one fine-tune on one GPU, from the shipped checkpoint, within 540 s of wall
# time, writing the checkpoint and its log to $OUT.
#
#   OUT=/some/dir bash models/demo/recipe/device_train.sh            # the device run (one H200, ~8.5 min)
#   OUT=/tmp/smoke bash models/demo/recipe/device_train.sh --smoke   # the same path on the CPU, 3 steps, eager
#   OUT=/tmp/x bash models/demo/recipe/device_train.sh --check       # seconds: imports, checkpoint, one batch
#
# The device call must carry models/demo/checkpoint (git-ignored, 15.4 MB): run(command=..., carry=["models/demo/checkpoint"]).
# Runs from the repository root on a bare machine: the repository is not installed there, so the package-dir
# mapping of pyproject.toml (rxt_edge, rxt_edge.export, ...) is laid out as a tree of symbolic links in /tmp and put
# on PYTHONPATH (no pip, nothing downloaded). The trainer stops on its own --deadline (seconds from its start), writes
# the checkpoint before its final evaluation, and `timeout` is only a last resort.
#
# Outputs: $OUT/train.log (everything printed), $OUT/ckpt/{config.json, model.safetensors, tokenizer.model,
# metrics.json}: 5 files, model.safetensors 15.2 MB. Turning it into packages: models/demo/README.md ("Stage 9").
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
ROOT=$(pwd)
[[ -f models/demo/recipe/train_demo.py ]] || { echo "run from the repository root" >&2; exit 2; }
# The shipped checkpoint is git-ignored here (.git/info/exclude): the device call must name it in `carry`.
for f in config.json model.safetensors tokenizer.model; do
    [[ -f models/demo/checkpoint/$f ]] || { echo "models/demo/checkpoint/$f missing: carry models/demo/checkpoint" >&2; exit 2; }
done

NS=$(mktemp -d /tmp/rxtns.XXXXXX)
mkdir -p "$NS/rxt_edge"
for f in "$ROOT"/rxt_edge/*; do ln -s "$f" "$NS/rxt_edge/"; done
for sub in runtimes export bench apps; do ln -s "$ROOT/$sub" "$NS/rxt_edge/$sub"; done
export PYTHONPATH="$NS${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

# The recipe (README.md, "Stage 9"): 65% of every batch everyday-typed conversations (demo_everyday), 35% the
# original templates, which keep held-out recall; stand-in values in 80% of the conversations, letter-chain
# spellings for half of them, the recalled value's pieces weighed x8.
RECIPE=(--init-from models/demo/checkpoint --tokenizer models/demo/checkpoint/tokenizer.model --width 80
    --everyday 0.65 --pseudo-values 0.8 --letters 0.5 --value-weight 8 --turns-start 4 --hold 0.1 --curriculum 0.2
    --lr 8e-4 --warmup 50 --seed 23)
if [[ "${1:-}" == "--check" ]]; then  # seconds: imports, the checkpoint, one device-shaped batch, one turn's loss
    rc=0
    (cd models/demo/recipe && "$PY" -c "
import torch, train_demo as td
from pathlib import Path
from rxt_edge.export.checkpoints.native import load_native
model, _ = load_native(Path('../checkpoint'))
net = td.Trainable(model, 0.02)
net.stm0.data.copy_(model.initial_stm)
data = td.DialogueBatches(Path('../checkpoint/tokenizer.model'), 1450, 16, 23, 4, 0.1, 0.2, True, 80,
    pseudo=0.8, value_weight=8, letters=0.5, everyday=0.65)
turns, count, leak = data[1400]
loss = td.dialogue_loss(net, td.TurnStep(model), turns[:2], count, leak)
print('check ok:', len(turns), 'turns of', tuple(turns[0].ids.shape), 'loss', round(float(loss.detach()), 4))
") || rc=$?
    rm -rf "$NS"
    exit "$rc"
fi
if [[ "${1:-}" == "--smoke" ]]; then
    # eager on the CPU (torch.compile there takes minutes); the fixed --width path is covered by the tests
    RUN=(--device cpu --steps 3 --batch 4 --workers 0 --eval-every 0 --eval-n 1 --final-n 1 --eval-procs 1
        --deadline 900 --reserve 30)
    LIMIT=1200
else
    RUN=(--device cuda --compile --steps 1450 --batch 256 --workers 12 --eval-every 500 --eval-n 48
        --final-n 40 --eval-procs 12 --deadline 495 --reserve 45)
    LIMIT=535
fi
mkdir -p "$OUT/ckpt"
{
    echo "device_train.sh $* on $(uname -n) at $(date -u +%FT%TZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/train.log"
set +e
timeout --signal=TERM --kill-after=10 "$LIMIT" "$PY" models/demo/recipe/train_demo.py "${RECIPE[@]}" "${RUN[@]}" \
    --out "$OUT/ckpt" 2>&1 | tee -a "$OUT/train.log"
rc=${PIPESTATUS[0]}
set -e
rm -rf "$NS"
ls -l "$OUT/ckpt" | tee -a "$OUT/train.log"
echo "exit $rc" | tee -a "$OUT/train.log"
exit "$rc"
