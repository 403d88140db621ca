# stage 1 is v19's: see results/rejected/v19_v18_at_3100_steps/train.sh (seed 0, 3100 steps; its metadata here as stage1_thinkctl_embedded.json)
#!/bin/bash
# v21: v19's stage 1 (seed 0, 3100 steps, compiled, 26.41 min) + a 3300-step stage 2 (seed 1), as v18's stage 2
set -e
cd /work/main
OPTS="--split-checks --p-slip 0.3 --mask-slips --answer-cut-share 0.5 --family modeq:mask_slips=false"
date +%s > runs/v21.start
.venv/bin/thinkctl train-embedded --out runs/v21_stage2 --seed 1 --init-from runs/v19_stage1 --lr 2e-3 --warmup 100 \
    --batch-size 32 --steps 3300 $OPTS > runs/v21_stage2.log 2>&1
date +%s > runs/v21.end
echo done > runs/v21.done
