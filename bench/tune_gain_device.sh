# Base vs tuned answers of the bundled Qwen2.5-0.5B on a GPU machine that holds no knowledge base
# (issue 3's "tuning helps" comparison, and prompt variants for issue 2). Run through the device tool:
#
#   here:   kb ingest corpus --kb /tmp/kbr && kb synth --no-llm --kb /tmp/kbr
#           python bench/refusal.py prompts corpus/qa.jsonl --kb /tmp/kbr --out .devdata/qa_default.jsonl
#           python bench/refusal.py prompts /tmp/kbr/synth/validation_qa.jsonl --kb /tmp/kbr \
#               --out .devdata/val_default.jsonl      (+ the variants, see bench/README.md)
#           python bench/refusal.py pairs /tmp/kbr/synth --out .devdata/valpairs.jsonl
#           cp /tmp/kbr/synth/{train,validation}.jsonl .devdata/
#           the joined GGUF split into 60 MiB pieces .mp/p0..p7, each carried in its own call
#           (carry [".mp/pI"]) and written into /tmp/kbdev/qwen.gguf there at its offset:
#             dd if=.mp/pI of=/tmp/kbdev/qwen.gguf bs=62914560 seek=I conv=notrunc
#           (the machine stays warm between calls)
#   there:  bash bench/tune_gain_device.sh convert train     (carry .whl .devdata)
#           bash bench/tune_gain_device.sh generate          (carry .whl .devdata)
#   here:   python bench/refusal.py score OUT/<prompts>__<label>.jsonl --kb /tmp/kbr
#           (valpairs: score --model-refusal)
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
    # Each method's shipped recipe (finetune/configs/).
    $F --method lora --name lora-v1 | tee "$OUT/finetune_lora.json"
    $F --method ptuning-v2 --name ptuning-v2-v1 | tee "$OUT/finetune_ptuning-v2.json"
    tar czf "$OUT/adapters_meta.tgz" -C $W/kb/models --exclude='*.safetensors' --exclude='*.bin' .
    ;;
  generate)
    mkdir -p $W/gen
    P=".devdata/qa_default.jsonl .devdata/val_default.jsonl .devdata/valpairs.jsonl"
    $G --out-dir $W/gen $P --label base
    for a in lora-v1 ptuning-v2-v1; do
      $G --out-dir $W/gen $P --label $a --adapter $W/kb/models/$a
    done
    tar czf "$OUT/gen.tgz" -C $W/gen .
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
