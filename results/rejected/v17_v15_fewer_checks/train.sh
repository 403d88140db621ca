#!/bin/bash
set -e
cd /work/main
OPTS="--split-checks --p-slip 0.3 --p-check 0.4 --mask-slips --answer-cut-share 0.5 --family arith:p_second_check=0.05 --family modeq:mask_slips=false,p_second_check=0.05"
.venv/bin/thinkctl train-embedded --out runs/v17_stage1 --seed 0 --batch-size 32 --steps 3300 $OPTS > runs/v17_stage1.log 2>&1
.venv/bin/thinkctl train-embedded --out runs/v17_stage2 --seed 1 --init-from runs/v17_stage1 --lr 2e-3 --warmup 100 \
    --batch-size 32 --steps 3300 $OPTS > runs/v17_stage2.log 2>&1
echo done > runs/v17.done
