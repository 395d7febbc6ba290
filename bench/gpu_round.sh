#!/usr/bin/env bash
# One device call of this session's GPU checks, each step with its own time limit, outputs in $OUT.
export PYTHONPATH=.:tests
python -m pip install -q --no-deps .whl/transformer_lens*.whl .whl/typeguard*.whl .whl/datasets*.whl .whl/dill*.whl .whl/multiprocess*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
python -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)"
timeout 200 python -m pytest -q tests/test_gpu_numerics.py tests/test_decoding.py 2>&1 | tail -12 | tee $OUT/gpu_tests.txt
timeout 200 python bench/bench_generate.py --tokens 50 --repeats 3 --sweep-clips 0 --out $OUT/bench_generate.json > $OUT/bench_generate.log 2>&1; tail -25 $OUT/bench_generate.log
timeout 110 python bench/diagnose_clip_forward.py --out $OUT > $OUT/diagnose.log 2>&1; head -c 2500 $OUT/diagnose.log
timeout 100 python bench/bench_minicpm_o.py --phase speed --out $OUT/bench_minicpm_o.json > $OUT/minicpm_speed.log 2>&1; tail -8 $OUT/minicpm_speed.log
