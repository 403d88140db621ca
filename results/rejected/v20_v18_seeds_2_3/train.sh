#!/bin/bash
set -e
cd /work/main
rm -rf /tmp/torchinductor_$(whoami)
OPTS="--split-checks --p-slip 0.3 --mask-slips --answer-cut-share 0.5 --family modeq:mask_slips=false"
date +%s > runs/v20.start
.venv/bin/thinkctl train-embedded --out runs/v20_stage1 --seed 2 --batch-size 32 --steps 3300 $OPTS > runs/v20_stage1.log 2>&1
.venv/bin/thinkctl train-embedded --out runs/v20_stage2 --seed 3 --init-from runs/v20_stage1 --lr 2e-3 --warmup 100 \
    --batch-size 32 --steps 3300 $OPTS > runs/v20_stage2.log 2>&1
date +%s > runs/v20.end
echo done > runs/v20.done
