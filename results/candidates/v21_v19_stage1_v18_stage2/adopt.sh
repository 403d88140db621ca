#!/bin/bash
# downstream results of candidate v21, run in the clone /work/adopt21 whose package holds v21's checkpoint
set -e
cd /work/adopt21
export PYTHONPATH=/work/adopt21/src
T=/work/main/.venv/bin/thinkctl
A=/work/main/runs/a21
mkdir -p $A
s() { date +%s; }
t0=$(s)
$T collect --task arith --n 240 --samples 4 --out $A/traces --no-progress > $A/collect.log 2>&1
$T train --traces $A/traces --out $A/bundle > $A/train.log 2>&1
$T calibrate --bundle $A/bundle --epsilon 0.05 --delta 0.1 > $A/calibrate.log 2>&1
t1=$(s); echo "bundle_arith $((t1-t0)) s" >> $A/times
$T demo --out $A/demo --fresh --no-progress > $A/demo.log 2>&1
t2=$(s); echo "demo $((t2-t1)) s" >> $A/times
$T demo --n 320 --samples 6 --out $A/demo320 --fresh --no-progress > $A/demo320.log 2>&1
rm -rf $A/bundle_t08 && cp -r $A/demo320/bundle $A/bundle_t08
$T calibrate --bundle $A/bundle_t08 --epsilon 0.01 > $A/calibrate_t08.log 2>&1
t3=$(s); echo "demo320 $((t3-t2)) s" >> $A/times
$T evaluate --task arith --seed 4242 --n 150 --bundle $A/bundle_t08 --token-cap 384 --json $A/evaluate.json \
    --no-progress > $A/evaluate.log 2>&1
t4=$(s); echo "evaluate $((t4-t3)) s" >> $A/times
echo done > $A/done
