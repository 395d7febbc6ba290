#!/usr/bin/env bash
# A device call of its own (written in the sixth session, not yet run): every family's bf16 error
# against its reference's float32 logits, with each reference cast as a bf16 checkpoint loads
# (rotary frequencies kept in float32, bench/casting.py). The ratios of earlier issues were taken
# against references cast with .to(torch.bfloat16) and are to be replaced by these. The timeouts
# sum to 560 s: the call fits the device tool's 600-s limit with the wheels installed.
export PYTHONPATH=.:tests PYTHONUNBUFFERED=1
for wheel in .whl/*.whl; do python -m pip install -q --no-deps "$wheel" > /dev/null 2>&1; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 100 python bench/profile_prefill.py --top 5 > $OUT/accuracy_qwen2_5_omni_text.json 2> $OUT/accuracy_qwen2_5_omni.log
timeout 140 python bench/bench_minicpm_o.py --phase accuracy --llm-layers 4 --out $OUT/accuracy_minicpm_o.json > $OUT/accuracy_minicpm_o.log 2>&1
timeout 150 python bench/bench_videollama2.py --accuracy-only --llm-layers 4 --out $OUT/accuracy_videollama2.json > $OUT/accuracy_videollama2.log 2>&1
timeout 170 python bench/bench_qwen3_omni.py --phase accuracy --llm-layers 4 --out $OUT/accuracy_qwen3_omni.json > $OUT/accuracy_qwen3_omni.log 2>&1
for f in $OUT/accuracy_*.json; do echo "$f"; python -c "import json,sys; d=json.load(open(sys.argv[1])); print(d.get('bf16_error_ratio'), d.get('bf16_vs_reference_fp32'))" "$f"; done
