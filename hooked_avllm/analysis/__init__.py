"""Experiments on a HookedAVLLM, one module per tool (see PAPER.md for the study they serve).

==========================  ==========================================================================
module                      what it does
==========================  ==========================================================================
``select``                  positions by modality, time range and media item (``cache.select`` uses it)
``attention_share``         E1: attention share per key kind, per layer and head, during generation
``logit_lens``              E2: residuals at chosen positions through (final norm +) unembedding, top-k
``knockout``                E3: block query-kind -> key-kind attention in chosen layers; sweeps
``token_shift``             E4: teacher-force a caption through a base model; KL, rank, shift labels
``heatmap``                 E4: attention (or any score) on video tokens drawn over the frames
``alignment``               pair the k-th audio/video/... token of one run with the k-th of another
``metrics``                 logit difference, answer probability, KL to a source run, restoration
``patching``                activation patching across layouts (audio-only -> audio + video); sweeps
``attribution_patching``    the linear estimate of a whole patching sweep from one backward pass
``token_dropping``          drop audio or video tokens after a layer, in prefill and generation
``logit_lens_sweep``        the logit lens over a list of clips (progress, ranks, ``resume=``)
``runner``                  the one sweep driver under every list: batching, progress, ranks, ordered gather
``sweep_store``             a sweep's results folder (``resume=``): each unit written exactly as it comes
``result_codec``            exact, pickle-free storage of a unit's result (safetensors + JSON)
``source_run``              the source run of a patch: aligned positions, kept activations, its answer
``arguments``               the checks every tool runs on its layers, windows and modalities (``AnalysisWarning``)
==========================  ==========================================================================

Example:
    >>> from hooked_avllm.analysis import attention_share, logit_lens, KnockoutRule  # doctest: +SKIP
    >>> shares = attention_share(model, inputs, max_new_tokens=50)                  # doctest: +SKIP
"""

from hooked_avllm.analysis.alignment import align_positions
from hooked_avllm.analysis.arguments import AnalysisWarning
from hooked_avllm.analysis.attribution_patching import AttributionPatching, AttributionSweep, attribution_patching
from hooked_avllm.analysis.attention_share import AttentionShare, attention_share, shares_from_patterns
from hooked_avllm.analysis.heatmap import attention_to_video, frame_heatmap, plot_frame_heatmaps, video_token_grid
from hooked_avllm.analysis.knockout import (
    Knockout,
    KnockoutRule,
    KnockoutSweep,
    generate_with_knockout,
    knockout,
    knockout_sweep,
)
from hooked_avllm.analysis.logit_lens import LogitLensResult, logit_lens
from hooked_avllm.analysis.logit_lens_sweep import logit_lens_sweep
from hooked_avllm.analysis.metrics import answer_prob, kl_to_source, logit_diff, restoration
from hooked_avllm.analysis.patching import PatchingSweep, patch, patching_sweep
from hooked_avllm.inputs.select import position_mask
from hooked_avllm.analysis.token_dropping import DropTokens, drop_tokens
from hooked_avllm.analysis.token_shift import TokenShiftResult, TokenShiftSweep, shift_summary, token_shift

__all__ = [
    "AnalysisWarning",
    "AttentionShare",
    "AttributionPatching",
    "AttributionSweep",
    "DropTokens",
    "Knockout",
    "KnockoutRule",
    "KnockoutSweep",
    "LogitLensResult",
    "PatchingSweep",
    "TokenShiftResult",
    "TokenShiftSweep",
    "align_positions",
    "answer_prob",
    "attention_share",
    "attention_to_video",
    "attribution_patching",
    "drop_tokens",
    "generate_with_knockout",
    "kl_to_source",
    "knockout",
    "knockout_sweep",
    "logit_diff",
    "logit_lens",
    "logit_lens_sweep",
    "patch",
    "patching_sweep",
    "frame_heatmap",
    "plot_frame_heatmaps",
    "position_mask",
    "restoration",
    "shares_from_patterns",
    "shift_summary",
    "token_shift",
    "video_token_grid",
]
