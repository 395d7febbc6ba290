#!/usr/bin/env bash
# The next device call (written in the fifth session, not yet run): the GPU tests with the plan
# cache and the cheaper towers_unwatched, the clip forward next to the reference in one process under
# each tower mode, and its trace (read it with: python bench/trace_gaps.py trace_queued.json.gz).
export PYTHONPATH=.:tests PYTHONUNBUFFERED=1
for wheel in .whl/*.whl; do python -m pip install -q --no-deps "$wheel" > /dev/null 2>&1; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 120 python -m pytest -q tests/test_gpu_numerics.py tests/test_decoding.py 2>&1 | tail -25 > $OUT/gpu_tests.txt; tail -3 $OUT/gpu_tests.txt
timeout 200 python bench/bench_generate.py --forward-only --repeats 11 --out $OUT/bench_generate_forward.json > $OUT/bench_generate.log 2>&1; tail -c 600 $OUT/bench_generate.log
timeout 120 python bench/trace_clip_forward.py --out $OUT --trace-modes queued --repeats 11 > $OUT/trace.log 2>&1; head -c 700 $OUT/trace.log
