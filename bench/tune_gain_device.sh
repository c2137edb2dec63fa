# Base vs tuned answers of the bundled Qwen2.5-0.5B on a GPU machine that holds no knowledge base
# (issue 3's "tuning helps" comparison, and prompt variants for issue 2). Run through the device tool:
#
#   here:   kb ingest corpus --kb /tmp/kbr && kb synth --no-llm --kb /tmp/kbr
#           python bench/refusal.py prompts corpus/qa.jsonl --kb /tmp/kbr --out .devdata/qa_default.jsonl
#           python bench/refusal.py prompts /tmp/kbr/synth/validation_qa.jsonl --kb /tmp/kbr \
#               --out .devdata/val_default.jsonl      (+ the variants, see bench/README.md)
#           cp /tmp/kbr/synth/{train,validation}.jsonl .devdata/
#           the joined GGUF split into 60 MiB pieces .mp/p0..p7, each carried in its own call and
#           appended to /tmp/kbdev/qwen.gguf there (the machine stays warm between calls)
#   there:  bash bench/tune_gain_device.sh convert train     (carry .whl .devdata)
#           bash bench/tune_gain_device.sh generate          (carry .whl .devdata)
#   here:   python bench/refusal.py score OUT/<prompts>__<label>.jsonl --kb /tmp/kbr
set -euo pipefail
W=/tmp/kbdev
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-$W/out}
mkdir -p "$W" "$OUT"
# The gate evaluates with retrieval, which needs the knowledge base: it runs here, not there.
F="python3 -m kb.cli finetune --kb $W/kb --model $W/qwen --data .devdata/train.jsonl --set eval.gate.enabled=false --json"
G="python3 bench/refusal.py generate --model $W/qwen --device cuda --dtype float32 --batch-size 16"

for stage in "$@"; do
  case $stage in
  convert)
    echo "$SHA  $W/qwen.gguf" | sha256sum -c -
    mkdir -p $W/qwen
    python3 -c "from pathlib import Path; from kb.generate.bundled import convert_gguf; \
convert_gguf(Path('$W/qwen.gguf'), Path('$W/qwen'))"
    ls -la $W/qwen
    ;;
  train)
    # Each method's shipped recipe (finetune/configs/), then LoRA for one epoch.
    $F --method lora --name lora-v1 | tee "$OUT/finetune_lora.json"
    $F --method ptuning-v2 --name ptuning-v2-v1 | tee "$OUT/finetune_ptuning-v2.json"
    $F --method lora --name lora-1ep-v1 --set finetune.training.num_train_epochs=1 \
      | tee "$OUT/finetune_lora-1ep.json"
    tar czf "$OUT/adapters_meta.tgz" -C $W/kb/models --exclude='*.safetensors' --exclude='*.bin' .
    ;;
  generate)
    mkdir -p $W/gen
    $G --out-dir $W/gen .devdata/qa_*.jsonl .devdata/val_default.jsonl --label base
    for a in lora-v1 ptuning-v2-v1 lora-1ep-v1; do
      $G --out-dir $W/gen .devdata/qa_default.jsonl .devdata/val_default.jsonl --label $a --adapter $W/kb/models/$a
    done
    tar czf "$OUT/gen.tgz" -C $W/gen .
    ;;
  pairs)
    # The held-out validation pairs as trained (their own gold + distractor sources, or none), base vs
    # the LoRA recipe: prompts .devdata/valpairs.jsonl (validation.jsonl without the reply).
    $F --method lora --name lora-v1 | tee "$OUT/finetune_lora.json"
    $G --out-dir $OUT .devdata/valpairs.jsonl --label base
    $G --out-dir $OUT .devdata/valpairs.jsonl --label lora-v1 --adapter $W/kb/models/lora-v1
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
