#!/bin/sh
# Regenerates the stored reference reports with the current build (deterministic: the same
# build and seed give byte-identical JSON). Run from the workspace root:
#   cargo build --release -p elara-simulations && sh simulations/baselines/regenerate.sh
set -e
SIM=${SIM:-target/release/elara-sim}
OUT=simulations/baselines
$SIM run call8 --seed 1 --json $OUT/call8.json
$SIM run livestream --seed 1 --set viewers=500 --set duration_s=20 --json $OUT/livestream-500.json
$SIM run livestream --seed 1 --set viewers=500 --set duration_s=20 --set workload.video.fragment_bytes=16000 --json $OUT/livestream-500-fragments.json
$SIM run lossy --seed 1 --set viewers=500 --set duration_s=20 --json $OUT/lossy-500.json
$SIM run churn --seed 1 --set viewers=500 --set duration_s=40 --json $OUT/churn-500.json
$SIM run heterogeneous --seed 1 --set viewers=500 --set duration_s=30 --set 'faults[0].at_s=15' --json $OUT/heterogeneous-500.json
$SIM run partition --seed 1 --set viewers=500 --set duration_s=40 --json $OUT/partition-500.json
$SIM run flash_crowd --seed 1 --set flash_crowd.viewers=1000 --set flash_crowd.over_s=10 --set duration_s=20 --json $OUT/flash_crowd-1000.json
