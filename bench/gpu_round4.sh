#!/usr/bin/env bash
# The fifth session's device call: GPU tests, the clip forward per tower arrangement with traces of
# its GPU gaps (bench/trace_clip_forward.py), the store at 3B.
export PYTHONPATH=.:tests PYTHONUNBUFFERED=1
for wheel in .whl/*.whl; do python -m pip install -q --no-deps "$wheel" > /dev/null 2>&1; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 150 python -m pytest -q tests/test_gpu_numerics.py tests/test_decoding.py 2>&1 | tail -25 > $OUT/gpu_tests.txt; tail -4 $OUT/gpu_tests.txt
timeout 150 python bench/trace_clip_forward.py --out $OUT > $OUT/trace.log 2>&1; head -c 1500 $OUT/trace.log
timeout 180 python bench/bench_store_gpu.py --clips 16 --out $OUT/bench_store_gpu.json > $OUT/store.log 2>&1; tail -c 1500 $OUT/store.log
