#!/usr/bin/env bash
# One evolve search over a Slurm cluster: task 0 of the array is the coordinator (it owns the CMA-ES
# and writes best/ and the reports into $OUT), every task is a worker with one GPU. The journal is a
# PostgreSQL database all nodes reach; the models must be readable on every node at the paths the
# recipe names (or give each worker its local copy with `--recipe`).
#
#   createdb -h db.cluster evomerge_evollm              # once: one database per search
#   sbatch --array=0-7 examples/slurm/evolve-array.sh evals/recipes/evollm-jp.yml runs/evollm-jp
#
# Resubmitting the same array resumes the search; extra arrays add workers to a running search.
#SBATCH --job-name=evomerge
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
set -euo pipefail
recipe=${1:?usage: evolve-array.sh RECIPE OUT}
out=${2:?usage: evolve-array.sh RECIPE OUT}
journal=${EVOMERGE_JOURNAL:-postgresql://$USER@db.cluster/evomerge_evollm}

if [ "${SLURM_ARRAY_TASK_ID:-0}" = 0 ]; then
  # The coordinator does not evaluate (--workers 0): this task's GPU runs a worker beside it.
  evomerge evolve "$recipe" --out "$out" --journal "$journal" --workers 0 --quiet &
  coordinator=$!
fi
evomerge worker --journal "$journal" --recipe "$recipe"
if [ -n "${coordinator:-}" ]; then wait "$coordinator"; fi
