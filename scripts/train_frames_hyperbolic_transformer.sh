#!/usr/bin/env bash
# Train the hyperbolic transformer video model on a frame-folder data set.
#
# Usage:
#   scripts/train_frames_hyperbolic_transformer.sh DATA_ROOT SPLIT_CSV [extra train_cli.py flags]
#   DATA_ROOT=... SPLIT_CSV=... scripts/train_frames_hyperbolic_transformer.sh [extra flags]
#
# DATA_ROOT is the folder that the frame folders of SPLIT_CSV are relative to; SPLIT_CSV lists
# one video per row, `video_folder, num_frames[, coarse_label[, fine_label]]`, without a header
# (see training/video_data.py). Without --val_csv, a share of the videos is held out for
# validation (--val_share, --holdout video|time). Extra flags are passed on to train_cli.py and
# override the defaults below, e.g. `--epochs 10 --num_workers 2`.
# Run from anywhere; the script runs train_cli.py from the repository root.
set -euo pipefail

usage() {
    echo "usage: $0 DATA_ROOT SPLIT_CSV [train_cli.py flags...]" >&2
    echo "   or: DATA_ROOT=... SPLIT_CSV=... $0 [train_cli.py flags...]" >&2
}

if [[ $# -ge 2 && "$1" != -* && "$2" != -* ]]; then
    DATA_ROOT="$1"
    SPLIT_CSV="$2"
    shift 2
fi
if [[ -z "${DATA_ROOT:-}" || -z "${SPLIT_CSV:-}" ]]; then
    usage
    exit 2
fi
if [[ ! -d "$DATA_ROOT" ]]; then
    echo "error: DATA_ROOT is not a folder: $DATA_ROOT" >&2
    exit 2
fi
if [[ ! -f "$SPLIT_CSV" ]]; then
    echo "error: SPLIT_CSV is not a file: $SPLIT_CSV" >&2
    exit 2
fi
# Absolute paths, so that changing into the repository root keeps them valid.
DATA_ROOT="$(cd "$DATA_ROOT" && pwd)"
SPLIT_CSV="$(cd "$(dirname "$SPLIT_CSV")" && pwd)/$(basename "$SPLIT_CSV")"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python train_cli.py \
    --dataset frames --data_root "$DATA_ROOT" --split_csv "$SPLIT_CSV" \
    --hyperbolic --use_transformer --fp64_hyper --distance squared \
    --img_dim 128 --num_seq 8 --seq_len 5 --ds 3 --pred_step 3 \
    --batch_size 32 --lr 1e-3 --epochs 100 --num_workers 8 \
    "$@"
