"""The study end to end (``../shared/PAPER.md``; issue "the study end to end").

- :mod:`~hooked_avllm.study.pairs` (and :mod:`~hooked_avllm.study.remux`): factual and
  counterfactual clips (another clip's sound under the same video packets) with their manifest;
  ``hooked-avllm pairs`` on the command line.
- :mod:`~hooked_avllm.study.scoring` and :mod:`~hooked_avllm.study.judge`: captions scored by
  keywords or by an LLM judge behind any OpenAI-compatible server; fidelity x100 per condition.
- :mod:`~hooked_avllm.study.store`, :mod:`~hooked_avllm.study.store_dataset` and
  :mod:`~hooked_avllm.study.probes`: activations of chosen hooks at chosen modalities written to
  sharded safetensors, read back as a torch ``Dataset``, exported for SAELens, probed per layer.

What they need beyond the core is the ``study`` extra (``pip install -e ".[study]"``: the
``openai`` client, ``pyarrow``, ``scipy``), imported only where used.
"""
