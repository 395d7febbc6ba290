#!/usr/bin/env bash
# The second device call: the towers side by side (audio on its own stream), tested and measured.
export PYTHONPATH=.:tests
python -m pip install -q --no-deps .whl/transformer_lens*.whl .whl/typeguard*.whl .whl/datasets*.whl .whl/dill*.whl .whl/multiprocess*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 70 python -m pytest -q tests/test_gpu_numerics.py -k "side_by_side or fused_kernels_leave" 2>&1 | tail -4 | tee $OUT/gpu_tests.txt
timeout 150 python bench/bench_generate.py --tokens 50 --repeats 3 --batches 1 --sweep-clips 0 --out $OUT/bench_generate.json > $OUT/bench_generate.log 2>&1; grep -E "clip_forward|speedup|_ratio" $OUT/bench_generate.log | head -12
