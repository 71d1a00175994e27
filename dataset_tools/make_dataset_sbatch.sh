#!/bin/bash
# Slurm job converting a directory of videos into a LongVideoGAN dataset, one task per partition.
#
# Usage (from the repository root, so that `python -m dataset_tools...` finds the package):
#   SRC_DIR=videos/ DST_DIR=datasets/mine sbatch dataset_tools/make_dataset_sbatch.sh
# Optional environment: NUM_PARTITIONS (default 10), CONDA_ENV (default dataset_tools; set it empty to use the
# current Python), EXTRA_ARGS (more tool options, default "--height 144 --width 256 --resolution 36x64").
# Each partition task is independent: rerunning the job skips the shards that are already complete.
#SBATCH -N 1
#SBATCH -n 10
#SBATCH -c 20
#SBATCH --exclusive

set -euo pipefail

: "${SRC_DIR:?set SRC_DIR to the input video directory}"
: "${DST_DIR:?set DST_DIR to the output dataset directory}"
NUM_PARTITIONS="${NUM_PARTITIONS:-10}"
CONDA_ENV="${CONDA_ENV-dataset_tools}"
EXTRA_ARGS="${EXTRA_ARGS:---height 144 --width 256 --resolution 36x64}"

if [ -n "${CONDA_ENV}" ]; then
    # shellcheck disable=SC1091
    source "$(conda info --base)/etc/profile.d/conda.sh"
    conda activate "${CONDA_ENV}"
fi

pids=()
for ((i = 0; i < NUM_PARTITIONS; i++)); do
    # shellcheck disable=SC2086
    srun -N 1 -n 1 --exclusive python -m dataset_tools.make_dataset_from_videos "${SRC_DIR}" "${DST_DIR}" \
        --num-partitions "${NUM_PARTITIONS}" --partition "${i}" --workers "${SLURM_CPUS_PER_TASK:-20}" \
        ${EXTRA_ARGS} &
    pids+=("$!")
done
# Wait for every partition and fail the job if any of them failed (rerunning redoes only the missing shards).
status=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "partition ${i} failed" >&2
        status=1
    fi
done
exit "${status}"
