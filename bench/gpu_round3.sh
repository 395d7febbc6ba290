#!/usr/bin/env bash
# The first device call of the fourth session: GPU tests (tower order, no host waits, captured
# attention share), the clip forward under each tower arrangement, generation and analysis ratios,
# run_with_cache streamed to the host, the profile of the clip forward, the store at 3B.
export PYTHONPATH=.:tests
# one wheel at a time: the folder holds multiprocess for several Pythons, and pip takes only the one that fits
for wheel in .whl/*.whl; do python -m pip install -q --no-deps "$wheel" > /dev/null 2>&1; done
python -c "import transformer_lens, sys; print('transformer-lens', transformer_lens.__version__ if hasattr(transformer_lens, '__version__') else '?', sys.version.split()[0])"
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
timeout 150 python -m pytest -q -x tests/test_gpu_numerics.py tests/test_decoding.py 2>&1 | tail -15 | tee $OUT/gpu_tests.txt
timeout 200 python bench/bench_generate.py --tokens 50 --repeats 3 --batches 1 --sweep-clips 0 --cache --out $OUT/bench_generate.json > $OUT/bench_generate.log 2>&1; grep -E "clip_forward|speedup|_ratio|error" $OUT/bench_generate.log | head -20
timeout 100 python bench/diagnose_clip_forward.py --out $OUT > $OUT/diagnose.log 2>&1; head -c 3000 $OUT/diagnose.log
timeout 110 python bench/bench_store_gpu.py --clips 16 --out $OUT/bench_store_gpu.json > $OUT/store.log 2>&1; tail -4 $OUT/store.log
