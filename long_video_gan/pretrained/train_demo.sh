#!/usr/bin/env bash
# Trains the two demo models from nothing with the project's own tools and exports them as safe weights:
#   1. the synthetic world dataset (dataset_tools/make_synthetic_dataset.py; skipped when DATA already holds one),
#   2. train_lres.py and train_sres.py with --preset demo, side by side (each resumes its run when rerun),
#   3. long_video_gan.export of each run's newest G_ema snapshot to OUT/demo_lres.safetensors, demo_sres.safetensors.
# Copy those two files into long_video_gan/pretrained/ and `make demo` and `generate.py` use them.
#
# Usage (from the repository root): bash long_video_gan/pretrained/train_demo.sh DATA RUNS OUT
# Settings (environment variables):
#   PYTHON        the Python to run                                   [python]
#   DEVICE        --device of both trainings (cpu, cuda, cuda:1, ...) [the scripts' default: cuda if available]
#   MINUTES       --max-minutes of each training (0: the preset's steps, 20000 each)  [0]
#   LRES_ARGS     more train_lres.py options, e.g. "--batch 16"      []
#   SRES_ARGS     more train_sres.py options                          []
#   DATA_ARGS     make_synthetic_dataset options  [--num-videos 48 --num-frames 256 --seed 1 --max-freq 3]
#   WORKERS       dataset writer processes                            [2]
# On a CPU the two trainings share the cores; one thread each (OMP_NUM_THREADS=1) is fastest on 2 cores.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: bash $0 DATA RUNS OUT  (settings: see the comments at the top of $0)" >&2
    exit 2
fi
DATA=$1 RUNS=$2 OUT=$3
PYTHON=${PYTHON:-python}
MINUTES=${MINUTES:-0}
WORKERS=${WORKERS:-2}
DATA_ARGS=${DATA_ARGS:---num-videos 48 --num-frames 256 --seed 1 --max-freq 3}
COMMON=(--preset demo --wandb off --max-minutes "$MINUTES")
[ -n "${DEVICE:-}" ] && COMMON+=(--device "$DEVICE")
# shellcheck disable=SC2206  # Word splitting of the *_ARGS settings is intended.
LRES_EXTRA=(${LRES_ARGS:-}) SRES_EXTRA=(${SRES_ARGS:-}) DATA_EXTRA=($DATA_ARGS)

if [ -f "$DATA/partitions.json" ]; then
    echo "Dataset: $DATA exists; not rebuilt."
else
    echo "Dataset: writing $DATA ..."
    "$PYTHON" -m dataset_tools.make_synthetic_dataset "$DATA" --resolution 36x64 --resolution 144x256 \
        --workers "$WORKERS" "${DATA_EXTRA[@]}"
fi

mkdir -p "$RUNS" "$OUT"
echo "Training both phases (logs: $RUNS/lres.log, $RUNS/sres.log) ..."
"$PYTHON" train_lres.py --dataset "$DATA" --outdir "$RUNS/lres" "${COMMON[@]}" "${LRES_EXTRA[@]}" \
    > "$RUNS/lres.log" 2>&1 &
LRES_PID=$!
"$PYTHON" train_sres.py --dataset "$DATA" --outdir "$RUNS/sres" "${COMMON[@]}" "${SRES_EXTRA[@]}" \
    > "$RUNS/sres.log" 2>&1 &
SRES_PID=$!
STATUS=0
wait $LRES_PID || { echo "train_lres.py failed; the end of $RUNS/lres.log:" >&2; tail -n 20 "$RUNS/lres.log" >&2; STATUS=1; }
wait $SRES_PID || { echo "train_sres.py failed; the end of $RUNS/sres.log:" >&2; tail -n 20 "$RUNS/sres.log" >&2; STATUS=1; }
[ $STATUS -eq 0 ] || exit 1

for phase in lres sres; do
    # The newest run directory's newest snapshot (the glob sorts; zero-padded names sort by number).
    snapshot=$(ls -1 "$RUNS/$phase"/*/checkpoints/ckpt-*-G-ema.pkl | tail -n 1)
    echo "$phase: $snapshot"
    "$PYTHON" -m long_video_gan.export "$snapshot" "$OUT/demo_$phase.safetensors"
done
echo "Done: $OUT/demo_lres.safetensors and $OUT/demo_sres.safetensors."
