#!/usr/bin/env bash
# The fifth session's second device call: the GPU numerics tests, then the clip forward next to the
# reference in one process (after the plan cache and the cheaper towers_unwatched), each tower mode.
export PYTHONPATH=.:tests PYTHONUNBUFFERED=1
for wheel in .whl/*.whl; do python -m pip install -q --no-deps "$wheel" > /dev/null 2>&1; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt

timeout 150 python bench/bench_generate.py --forward-only --repeats 11 --out $OUT/bench_generate_forward.json > $OUT/bench_generate.log 2>&1; tail -c 600 $OUT/bench_generate.log
