#!/usr/bin/env bash
# GPU evidence in one prepared run (about 6 minutes on one H200; every section has its own time limit).
#
#   scripts/gpu_check.sh [--out DIR] [--dry-run]
#
# Sections, logged together to DIR/sections.log and reported in DIR/summary.md (ok / failed / skipped, with why):
#   env        the GPU, driver, torch and the packages the later sections need;
#   bench_1b   `losia-factory benchmark` in bfloat16 on a LLaMA of about 1B parameters (TinyLlama's shape, random
#              weights): floor, LoSiA-Pro, LoSiA, LoRA and DoRA at the matched rank, GaLore, full fine-tuning, with
#              and without gradient checkpointing; us/token and peak CUDA memory;
#   bench_7b   the same for floor, LoSiA-Pro and LoRA on four decoder layers of LLaMA-2 7B's shape, if time is left;
#   smoke      100 steps of LoSiA-Pro in bfloat16 through llamafactory-cli on the quality harness's task, then its
#              evaluation; needs llamafactory and the SmolLM2-135M folder (LOSIA_QUALITY_MODEL, default
#              saves/quality/model), otherwise skipped with the reason;
#   deepspeed  the first steps of a DeepSpeed ZeRO-2 run in bfloat16 on one GPU (a random LLaMA of ~0.4B built
#              offline); needs llamafactory and deepspeed.
# DIR/summary.md also holds the tables and the targets; copy it to docs/benchmarks_gpu.md.
#
# --dry-run runs every section on the CPU with tiny sizes (the same code paths; CI runs it), without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT_DIR=${OUT:-gpu_check_out}
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (use --out DIR, --dry-run)" >&2; exit 2 ;;
  esac
done
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create --out $OUT_DIR" >&2; exit 2; }
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
STARTED=$(date +%s)
SECTIONS="$OUT_DIR/sections.tsv"
: >"$SECTIONS"
: >"$OUT_DIR/sections.log"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$(dirname "$PY"):$PATH"

has() { "$PY" -c "import $1" >/dev/null 2>&1; }
elapsed() { echo $(( $(date +%s) - STARTED )); }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SECTIONS"; echo "[gpu_check] $1: $2 ($3 s) $4"; }
section() {  # section NAME LIMIT_SECONDS command...
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "[gpu_check] $name (limit ${limit} s, $(elapsed) s so far) ..."
  # Through bash -c so that the exported section functions run under timeout like any command.
  timeout --kill-after=10 "$limit" bash -c '"$@"' section "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  # One log file for all sections (a lent GPU machine sends back few files): each section's last 300 lines.
  { echo "==== $name (exit $rc) ===="; tail -n 300 "$WORK/$name.log"; } >>"$OUT_DIR/sections.log"
  if [ $rc -eq 0 ]; then
    record "$name" ok $(( $(date +%s) - t0 )) ""
  else
    local why="exit $rc"
    [ $rc -eq 124 ] && why="time limit of ${limit} s"
    record "$name" failed $(( $(date +%s) - t0 )) "$why; last line: $(tail -n 1 "$WORK/$name.log" | cut -c1-160)"
  fi
}

if [ $DRY -eq 1 ]; then
  DEVICE=cpu; DTYPE=float32; BF16=false; DS_BACKEND=$'\nddp_backend: gloo'
  SHAPE_1B=(--hidden-size 64 --num-layers 2 --intermediate-size 128 --num-heads 4 --num-kv-heads 2 --vocab-size 512
            --batch-size 2 --seq-len 32 --steps 2 --warmup 1 --time-slot 4)
  SHAPE_7B=("${SHAPE_1B[@]}")
  SMOKE_STEPS=3; DS_STEPS=2; DS_HIDDEN=64; DS_LAYERS=2
else
  DEVICE=cuda; DTYPE=bfloat16; BF16=true; DS_BACKEND=""
  # TinyLlama-1.1B's shape (hidden 2048, 22 layers, MLP 5632, 32 heads, 4 KV heads), 4 x 1024 tokens.
  SHAPE_1B=(--hidden-size 2048 --num-layers 22 --intermediate-size 5632 --num-heads 32 --num-kv-heads 4
            --vocab-size 32000 --batch-size 4 --seq-len 1024 --steps 10 --warmup 3)
  # Four decoder layers of LLaMA-2 7B (hidden 4096, MLP 11008, 32 heads) and its output layer.
  SHAPE_7B=(--hidden-size 4096 --num-layers 4 --intermediate-size 11008 --num-heads 32 --num-kv-heads 32
            --vocab-size 32000 --batch-size 4 --seq-len 1024 --steps 10 --warmup 3)
  SMOKE_STEPS=100; DS_STEPS=5; DS_HIDDEN=1024; DS_LAYERS=24
fi

export DRY PY ROOT WORK OUT_DIR SMOKE_STEPS DS_STEPS DS_HIDDEN DS_LAYERS BF16 DS_BACKEND

# -- env ----------------------------------------------------------------------------------------------------------
env_report() {
  if [ $DRY -eq 0 ]; then nvidia-smi || return 1; fi
  "$PY" - <<'EOF'
import importlib, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
for name in ("transformers", "peft", "galore_torch", "llamafactory", "deepspeed", "losia_factory"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as err:  # a missing package only skips the sections that need it
        print(f"{name}: not importable ({type(err).__name__}: {err})")
EOF
}
export -f env_report
section env 120 env_report
if [ $DRY -eq 0 ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: this python ($PY) sees no CUDA device; run with --dry-run on a CPU machine" >&2
  exit 2
fi

# -- benchmarks ---------------------------------------------------------------------------------------------------
BENCH=("$PY" -m losia_factory.bench --device "$DEVICE" --dtype "$DTYPE" --no-interleave)
section bench_1b 330 "${BENCH[@]}" "${SHAPE_1B[@]}" --methods floor,losia_pro,losia,lora,dora,galore,full \
  --json "$OUT_DIR/bench_1b.json"
if [ "$(elapsed)" -lt 240 ] || [ $DRY -eq 1 ]; then
  section bench_7b 150 "${BENCH[@]}" "${SHAPE_7B[@]}" --methods floor,losia_pro,lora --json "$OUT_DIR/bench_7b.json"
else
  record bench_7b skipped 0 "time: $(elapsed) s used before it"
fi

# -- llamafactory sections ----------------------------------------------------------------------------------------
if has llamafactory && ! "$PY" -c 'import importlib.metadata as m; m.distribution("losia-factory")' >/dev/null 2>&1; then
  # The package is not installed here (a bare GPU machine): its import hook still has to reach every process.
  mkdir -p "$WORK/site"
  echo 'import losia_factory._import_hook' >"$WORK/site/sitecustomize.py"
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi

smoke() {
  local model=${LOSIA_QUALITY_MODEL:-$ROOT/saves/quality/model}
  mkdir -p "$WORK/quality"
  if [ $DRY -eq 1 ]; then
    "$PY" -c "from losia_factory.demo import build_tiny_llama; build_tiny_llama('$WORK/quality/model', \
hidden_size=64, intermediate_size=128, num_layers=2)" || return 1
    SMOKE_SIZES=(--steps "$SMOKE_STEPS")
  else
    ln -s "$model" "$WORK/quality/model"
    SMOKE_SIZES=(--steps "$SMOKE_STEPS" --bf16)
  fi
  "$PY" scripts/quality.py --methods losia_pro --lrs 1e-3 --no-docs --jobs 1 --threads 4 --work "$WORK/quality" \
    "${SMOKE_SIZES[@]}" || return 1
  cp "$WORK/quality/results.json" "$OUT_DIR/smoke_results.json"
}
export -f smoke
if ! has llamafactory; then
  record smoke skipped 0 "llamafactory is not importable (carry its wheels)"
elif [ $DRY -eq 0 ] && [ ! -f "${LOSIA_QUALITY_MODEL:-$ROOT/saves/quality/model}/config.json" ]; then
  record smoke skipped 0 "no SmolLM2-135M folder (set LOSIA_QUALITY_MODEL; make quality builds it on a CPU)"
else
  section smoke 240 smoke
fi

deepspeed_steps() {
  "$PY" -c "from losia_factory.demo import build_tiny_llama; build_tiny_llama('$WORK/ds_model', \
hidden_size=$DS_HIDDEN, intermediate_size=$((DS_HIDDEN * 11 / 4)), num_layers=$DS_LAYERS)" || return 1
  "$PY" -c "from losia_factory.demo import write_dataset; write_dataset('$WORK/ds_data')" || return 1
  cat >"$WORK/ds.yaml" <<EOF
model_name_or_path: $WORK/ds_model
trust_remote_code: false
stage: sft
do_train: true
finetuning_type: losia
losia_rank_factor: 0.125
losia_output_rank_factor: 0.125
losia_time_slot: 2
deepspeed: $ROOT/recipes/deepspeed/ds_z2_config.json
dataset: demo_arithmetic
dataset_dir: $WORK/ds_data
template: chatml
cutoff_len: 128
overwrite_cache: true
preprocessing_num_workers: 1
output_dir: $WORK/ds_out
overwrite_output_dir: true
per_device_train_batch_size: 4
gradient_accumulation_steps: 2
learning_rate: 1.0e-4
max_steps: $DS_STEPS
logging_steps: 1
save_strategy: "no"
report_to: none
bf16: $BF16
fp16: false$DS_BACKEND
EOF
  export FORCE_TORCHRUN=1 NPROC_PER_NODE=1  # DeepSpeed wants a launcher's environment even for one process
  llamafactory-cli train "$WORK/ds.yaml" || return 1
  cp "$WORK/ds_out/losia_log.jsonl" "$OUT_DIR/deepspeed_losia_log.jsonl" 2>/dev/null
  grep -q '"reselect"' "$WORK/ds_out/losia_log.jsonl"
}
export -f deepspeed_steps
if ! has llamafactory || ! has deepspeed; then
  record deepspeed skipped 0 "llamafactory or deepspeed is not importable (carry their wheels)"
else
  section deepspeed 240 deepspeed_steps
fi

# -- summary ------------------------------------------------------------------------------------------------------
"$PY" -m losia_factory.bench.gpu_summary --out "$OUT_DIR" --sections "$SECTIONS" --dry-run "$DRY" \
  >"$OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
rm -rf "$WORK"
echo "[gpu_check] done in $(elapsed) s; summary: $OUT_DIR/summary.md"
! grep -q "	failed	" "$SECTIONS"
