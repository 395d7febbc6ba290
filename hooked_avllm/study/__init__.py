"""The study end to end (``../shared/PAPER.md``; issue "the study end to end"): counterfactual clip
pairs, caption scoring with an LLM judge, an audio-visual activation store for probes and SAEs.

Each part is its own module; what they need beyond the core is the ``study`` extra
(``pip install -e ".[study]"``: the ``openai`` client, ``pyarrow``, ``scipy``).
"""
