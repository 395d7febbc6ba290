#!/usr/bin/env bash
# The second device call: the towers side by side (audio on its own stream), tested and measured.
export PYTHONPATH=.:tests
python -m pip install -q --no-deps .whl/transformer_lens*.whl .whl/typeguard*.whl .whl/datasets*.whl .whl/dill*.whl .whl/multiprocess*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 90 python -m pytest -q tests/test_gpu_numerics.py -k "side_by_side or fused_kernels_leave" 2>&1 | tail -4 | tee $OUT/gpu_tests.txt
timeout 190 python bench/bench_generate.py --tokens 50 --repeats 3 --sweep-clips 0 --out $OUT/bench_generate.json > $OUT/bench_generate.log 2>&1; grep -E "clip_forward|speedup|_ratio" $OUT/bench_generate.log | head -12
timeout 100 python bench/diagnose_clip_forward.py --out $OUT > $OUT/diagnose.log 2>&1; python -c "
import json; d=json.load(open('$OUT/diagnose_clip_forward.json')); print(d['stages_ms'], d['wall_ms'], {k: v for k, v in d['profile'].items() if k != 'ops'})"
