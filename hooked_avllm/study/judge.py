"""The LLM judge of the study: CLAIR-style caption scoring by a model behind any OpenAI-compatible
server (the study ran a local vLLM), with retries, a concurrency limit and an on-disk answer cache.

Two prompts, one per kind: AUDIO asks whether the candidate caption describes the *sounds* of the
reference audio caption, VIDEO whether it describes its *visual content*. Each is a system prompt
plus three worked examples, and asks for one JSON object ``{"score": <integer 0-100>, "reason":
"<one sentence>"}``. The reply may open with a ``<think>...</think>`` block (reasoning models) and
wrap the JSON in a code fence; anything else (not JSON, a missing key, a score that is not an
integer in 0-100) gives a *missing* :class:`~hooked_avllm.study.scoring.Judgement` carrying the
error and the raw reply: nothing is clamped or guessed. A score of 80 becomes 0.8 (the study's
0-1 scale, reported x100 by :func:`~hooked_avllm.study.scoring.fidelity_table`).

Retries (our own loop; the client's are switched off so that ``attempts`` counts every request):
timeouts, connection errors, HTTP 408, 429 and 5xx are retried up to ``max_retries`` times with
exponential backoff (``backoff`` x 2^(attempt-1) seconds, at most ``max_backoff``, less up to 25%
jitter); a retried response that sends ``Retry-After`` (or ``retry-after-ms``) waits exactly that long,
and gives up at once if it asks for more than ``max_retry_after``. Other 4xx (400 bad request,
401 key, 404 model) are not retried. A reply that cannot be parsed is not retried either (greedy
decoding would repeat it), and neither is cached: only scored judgements enter the cache, so a
rerun asks again for everything that failed and for nothing else.

The cache (``cache=``, a JSON-lines file) is keyed by a SHA-256 of the judge model, the prompt
version, the messages and the sampling settings; it stores the raw reply, which is parsed again
when read. Identical requests within one call are sent once. See ``docs/study_judge.md``.

Example:
    >>> messages = build_messages("A dog barks at a passing car.", "A dog barks repeatedly", "audio")
    >>> [m["role"] for m in messages][:3], messages[-1]["content"].splitlines()[0]
    (['system', 'user', 'assistant'], 'Reference (the sounds of the clip): A dog barks repeatedly')
    >>> parse_reply('<think>The dog barks in both.</think>```json\\n{"score": 90, "reason": "Barking."}\\n```').score
    0.9
    >>> parse_reply('{"score": 0.9, "reason": "Barking."}').error
    'score must be an integer from 0 to 100, got 0.9 (a 0-1 answer?)'
    >>> judge = LLMJudge("Qwen/Qwen3-8B", base_url="http://localhost:8000/v1", api_key="EMPTY",
    ...                  concurrency=16, cache="judge_cache.jsonl")              # doctest: +SKIP
    >>> table = fidelity_table(score_rows(judge, caption_rows))                     # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hooked_avllm.study.scoring import Judgement, Kind, check_kind, check_pairs, unusable

__all__ = ["PROMPT_VERSION", "PROMPTS", "AnswerCache", "LLMJudge", "build_messages", "cache_key", "parse_reply"]

PROMPT_VERSION = "av-clair-1"  # change it whenever the prompts below change meaning

_OUTPUT = ('Reply with one JSON object and nothing else: {"score": <an integer from 0 to 100>, "reason": "<one short '
           'sentence>"}.')

_AUDIO_SYSTEM = """You grade captions that a model wrote for short video clips. You see a REFERENCE, written by a \
person who only listened to the clip's soundtrack, and a CANDIDATE caption written by the model.

Question: does the candidate describe the SOUNDS of the reference? Look only at what can be heard: the sound \
sources and sound events (speech, an engine, rain, a dog barking, music...). Ignore what the candidate says about \
what is seen unless it states or clearly implies a sound. The same sound in other words counts (a dog "yapping" \
for "barking"). Sounds the candidate claims that the reference does not have, in particular the sound that \
something on screen would usually make, count against it.

Scale: 100 = every sound of the reference is described and no wrong sound is claimed; about 50 = part of the \
reference's sounds are described, or they are described together with wrong ones; 0 = none of them is described, \
or the candidate describes no sound at all.

""" + _OUTPUT

_VIDEO_SYSTEM = """You grade captions that a model wrote for short video clips. You see a REFERENCE, written by a \
person who watched the clip with the sound off, and a CANDIDATE caption written by the model.

Question: does the candidate describe the VISUAL CONTENT of the reference? Look only at what can be seen: the \
people, animals and objects, the place, and what they are doing. Ignore what the candidate says about sounds. The \
same thing in other words counts ("a puppy" for "a small dog"). Things the candidate claims to see that contradict \
the reference count against it.

Scale: 100 = the main things and actions of the reference are described and nothing contradicts it; about 50 = \
part of it is described, or it is described together with wrong details; 0 = nothing of it is described, or the \
candidate describes no visual content at all.

""" + _OUTPUT

_EXAMPLES: dict[str, list[tuple[str, str, int, str]]] = {  # (reference, candidate, score, reason), written for us
    "audio": [
        ("A man talks while birds chirp in the background",
         "The video shows a man in a garden speaking to the camera, with birds singing in the trees.",
         95, "Both sounds of the reference, the man's speech and the birdsong, are described."),
        ("An engine idles and then revs as a vehicle drives off",
         "A red car is parked on a street; its engine starts and people are chatting nearby.",
         50, "The engine is described but not the revving or the vehicle leaving, and the chatting is not in the reference."),
        ("Water runs from a tap and dishes clatter",
         "A motorcycle speeds down a dirt road, its engine roaring.",
         0, "The candidate hears an engine; the reference has running water and clattering dishes."),
    ],
    "video": [
        ("A woman slices vegetables on a wooden board in a kitchen",
         "In a kitchen, a person chops carrots on a cutting board while a radio plays.",
         90, "The kitchen, a person and the chopping on a board are described; the radio is a sound and is ignored."),
        ("Two boys ride bicycles down a suburban street",
         "A child rides a skateboard along a road lined with houses.",
         45, "A child moving along a residential street matches, but it is one child on a skateboard, not two boys on bicycles."),
        ("A helicopter hovers low over a grassy field",
         "You can hear loud whirring blades and gusts of wind.",
         0, "The candidate describes only sounds, nothing that can be seen."),
    ],
}

_REFERENCE_LABEL = {"audio": "Reference (the sounds of the clip)", "video": "Reference (what the clip shows)"}

PROMPTS: dict[str, str] = {"audio": _AUDIO_SYSTEM, "video": _VIDEO_SYSTEM}


def _user_message(caption: str, reference: str, kind: str) -> str:
    return f"{_REFERENCE_LABEL[kind]}: {reference.strip()}\nCandidate caption: {caption.strip()}"


def build_messages(caption: str, reference: str, kind: Kind) -> list[dict[str, str]]:
    """The chat messages that ask the judge about one caption: the kind's system prompt, its worked
    examples as user/assistant turns, then the question (see the module's example)."""
    kind = check_kind(kind)
    messages = [{"role": "system", "content": PROMPTS[kind]}]
    for reference_, candidate, score, reason in _EXAMPLES[kind]:
        messages.append({"role": "user", "content": _user_message(candidate, reference_, kind)})
        messages.append({"role": "assistant", "content": json.dumps({"score": score, "reason": reason})})
    messages.append({"role": "user", "content": _user_message(caption, reference, kind)})
    return messages


# ------------------------------------------------------------------------------------ parsing

_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)\s*```", re.S)


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _answer_text(reply: str) -> str:
    """The reply after its reasoning block, without a surrounding code fence; ValueError if cut off."""
    if "</think>" in reply:
        reply = reply.rsplit("</think>", 1)[1]
    elif "<think>" in reply:
        raise ValueError("the <think> block never closes: the reply was cut off (raise max_tokens)")
    body = reply.strip()
    fence = _FENCE.fullmatch(body)
    return fence.group(1) if fence else body


def _parse(reply: str | None) -> tuple[float, str]:
    """(score in [0, 1], reason) of a judge's reply, or ValueError saying what is wrong with it."""
    if reply is None or not reply.strip():
        raise ValueError("empty reply (no message content)")
    body = _answer_text(reply)
    try:
        value = json.loads(body)
    except json.JSONDecodeError as error:
        raise ValueError(f"reply is not JSON ({error.msg}): {_short(body)!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"reply is JSON but not an object: {_short(body)!r}")
    absent = [key for key in ("score", "reason") if key not in value]
    if absent:
        raise ValueError(f"reply lacks the key(s) {absent}: {_short(body)!r}")
    score, reason = value["score"], value["reason"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"score must be an integer from 0 to 100, got {score!r}")
    if score != int(score):
        raise ValueError(f"score must be an integer from 0 to 100, got {score!r}" + (" (a 0-1 answer?)" if 0 < score < 1 else ""))
    if not 0 <= score <= 100:
        raise ValueError(f"score must be an integer from 0 to 100, got {score!r} (out of range)")
    if not isinstance(reason, str):
        raise ValueError(f"reason must be a string, got {reason!r}")
    return int(score) / 100, reason.strip()


def parse_reply(reply: str | None, attempts: int = 1) -> Judgement:
    """The :class:`Judgement` of one reply: scored (the integer 0-100 divided by 100), or missing
    with the error when the reply is not the JSON object the prompt asks for.

    Example:
        >>> parse_reply('{"score": 101, "reason": "x"}').error
        'score must be an integer from 0 to 100, got 101 (out of range)'
        >>> print(parse_reply('{"score": 40}').error)
        reply lacks the key(s) ['reason']: '{"score": 40}'
        >>> parse_reply("Sure! The score is 80.").missing
        True
    """
    try:
        score, reason = _parse(reply)
    except ValueError as error:
        return Judgement(None, error=str(error), raw=reply, attempts=attempts)
    return Judgement(score, reason=reason, raw=reply, attempts=attempts)


# ------------------------------------------------------------------------------------ the cache

def cache_key(model: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
    """SHA-256 of the judge model, :data:`PROMPT_VERSION`, the messages and the sampling settings.

    Example:
        >>> len(cache_key("judge", [{"role": "user", "content": "hi"}], {"temperature": 0.0}))
        64
    """
    blob = json.dumps({"model": model, "prompt_version": PROMPT_VERSION, "messages": messages, "settings": settings},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """The judge's replies on disk, one JSON object per line: ``{"key", "model", "prompt_version",
    "kind", "reply"}``. Only replies that parsed into a score are written; a line that does not
    parse (a run killed mid-write) is skipped when reading. Safe for the judge's threads.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "answers.jsonl")
        >>> cache = AnswerCache(path)
        >>> cache.put("k1", '{"score": 70, "reason": "ok"}', model="judge", kind="audio")
        >>> AnswerCache(path).get("k1")
        '{"score": 70, "reason": "ok"}'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._replies: dict[str, str] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self._replies[record["key"]] = record["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> str | None:
        """The reply stored under ``key``, or None."""
        return self._replies.get(key)

    def put(self, key: str, reply: str, model: str, kind: str) -> None:
        """Append one reply (call it for scored judgements only)."""
        line = json.dumps({"key": key, "model": model, "prompt_version": PROMPT_VERSION, "kind": kind, "reply": reply},
                          ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
            self._replies[key] = reply


# ------------------------------------------------------------------------------------ retries

def retry_after_seconds(headers: Any) -> float | None:
    """The wait a response asks for (``retry-after-ms``, or ``Retry-After`` in seconds or as an
    HTTP date), or None.

    Example:
        >>> retry_after_seconds({"retry-after": "2"}), retry_after_seconds({"retry-after-ms": "250"})
        (2.0, 0.25)
    """
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def _failure(error: Exception, timeout: float) -> tuple[str, bool, float | None]:
    """(what went wrong, whether to retry, the wait the server asked for) of one failed request."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return f"timed out (no reply within timeout={timeout} s)", True, None
    if isinstance(error, openai.APIConnectionError):
        return f"connection error: {error}", True, None
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        retry = status in (408, 429) or status >= 500
        wait = retry_after_seconds(error.response.headers) if retry else None
        return f"HTTP {status}: {_short(str(error.message), 200)}", retry, wait
    raise error


def _check(name: str, value: Any, low: float, integer: bool = False) -> None:
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok or not value >= low:
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {what} >= {low}, got {value!r}")


class LLMJudge:
    """An LLM judge behind an OpenAI-compatible chat-completions server; a
    :class:`~hooked_avllm.study.scoring.Scorer`.

    ``model`` is the judge's model name on the server, ``base_url`` the server's ``/v1`` address
    (e.g. ``http://localhost:8000/v1`` for ``vllm serve``; None: the ``openai`` client's default),
    ``api_key`` its key (None: ``OPENAI_API_KEY``, else ``"EMPTY"``, which vLLM accepts). ``timeout``
    bounds each request (seconds); ``max_retries``, ``backoff``, ``max_backoff`` and
    ``max_retry_after`` set the retry policy of the module docstring; ``concurrency`` is the most
    requests in flight at once (threads, so it works inside a notebook's running event loop);
    ``cache`` a JSON-lines file of replies (None: no cache); ``temperature`` and ``max_tokens``
    are sent with every request (give a reasoning judge room for its ``<think>`` block), and
    ``extra_body`` too (e.g. vLLM's ``{"chat_template_kwargs": {"enable_thinking": False}}``).
    ``client`` replaces the client built from ``base_url`` and ``api_key`` (its own retries are
    switched off). ``progress`` shows a bar per call.

    Example:
        >>> LLMJudge("judge", api_key="EMPTY", concurrency=0)
        Traceback (most recent call last):
        ...
        ValueError: concurrency must be an integer >= 1, got 0
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_retry_after: float = 120.0, concurrency: int = 8, cache: str | os.PathLike | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024, extra_body: dict[str, Any] | None = None,
                 client: Any = None, progress: bool = True):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be the judge's model name on the server, got {model!r}")
        _check("concurrency", concurrency, 1, integer=True)
        _check("max_retries", max_retries, 0, integer=True)
        _check("max_tokens", max_tokens, 1, integer=True)
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff), ("max_retry_after", max_retry_after)):
            _check(name, value, 0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.model, self.timeout, self.max_retries = model, float(timeout), max_retries
        self.backoff, self.max_backoff, self.max_retry_after = float(backoff), float(max_backoff), float(max_retry_after)
        self.concurrency, self.progress = concurrency, progress
        self.settings = {"temperature": temperature, "max_tokens": max_tokens, **({"extra_body": extra_body} if extra_body else {})}
        self.cache = AnswerCache(cache) if cache is not None else None
        self.client = self._client(client, base_url, api_key)

    def _client(self, client: Any, base_url: str | None, api_key: str | None) -> Any:
        if client is not None:
            return client.with_options(max_retries=0, timeout=self.timeout)
        try:
            import openai
        except ImportError as error:
            raise ImportError("the LLM judge needs the openai client: pip install -e '.[study]'") from error
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        return openai.OpenAI(base_url=base_url, api_key=key, timeout=self.timeout, max_retries=0)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff before retry number ``attempt`` (1, 2, ...), less up to 25% jitter."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (1 - 0.25 * random.random())

    def _reply(self, messages: list[dict[str, str]]) -> str | None:
        response = self.client.chat.completions.create(model=self.model, messages=messages, **self.settings)
        if not response.choices:
            return None
        return response.choices[0].message.content

    def ask(self, messages: list[dict[str, str]]) -> Judgement:
        """One request with the retry policy: the parsed reply, or a missing judgement with the error."""
        for attempt in range(1, self.max_retries + 2):
            try:
                reply = self._reply(messages)
            except Exception as error:  # _failure re-raises what is not a request failure
                what, retry, wait = _failure(error, self.timeout)
                if not retry:
                    return Judgement(None, error=f"{what} (not retried)", attempts=attempt)
                if attempt > self.max_retries:
                    return Judgement(None, error=f"{what} (gave up after {attempt} attempts)", attempts=attempt)
                if wait is not None and wait > self.max_retry_after:
                    return Judgement(None, error=f"{what}; the server asks to wait {wait:.0f} s (Retry-After), more "
                                     f"than max_retry_after={self.max_retry_after:g} s: rerun later (the cache keeps "
                                     "what was scored)", attempts=attempt)
                time.sleep(wait if wait is not None else self._delay(attempt))
                continue
            return parse_reply(reply, attempts=attempt)
        raise AssertionError("unreachable")

    def judge_one(self, caption: str | None, reference: str, kind: Kind) -> Judgement:
        """The judgement of one caption (through the cache)."""
        return self.score([caption], [reference], kind)[0]

    def _cached(self, key: str) -> Judgement | None:
        reply = self.cache.get(key) if self.cache is not None else None
        if reply is None:
            return None
        judgement = parse_reply(reply, attempts=0)
        return None if judgement.missing else Judgement(judgement.score, judgement.reason, raw=reply, cached=True)

    def score(self, captions: Sequence[str | None], references: Sequence[str], kind: Kind) -> list[Judgement]:
        """One :class:`Judgement` per caption, in order: from the cache, or asked of the judge
        (``concurrency`` requests at a time, identical requests once); a caption of None or an empty
        reference gives a missing judgement without a request."""
        kind = check_kind(kind)
        check_pairs(captions, references)
        results: list[Judgement | None] = [unusable(c, r) for c, r in zip(captions, references)]
        pending: dict[str, tuple[list[dict[str, str]], list[int]]] = {}
        for i, (caption, reference) in enumerate(zip(captions, references)):
            if results[i] is None:
                messages = build_messages(caption, reference, kind)  # type: ignore[arg-type]
                key = cache_key(self.model, messages, self.settings)
                results[i] = self._cached(key)
                if results[i] is None:
                    pending.setdefault(key, (messages, []))[1].append(i)
        self._ask_all(pending, results, kind, total=len(captions))
        return results  # type: ignore[return-value]

    def _ask_all(self, pending: dict[str, tuple[list[dict[str, str]], list[int]]], results: list[Judgement | None],
                 kind: str, total: int) -> None:
        """Ask every pending request, ``concurrency`` at a time, filling ``results`` and the cache."""
        bar = tqdm(total=total, initial=total - sum(len(ix) for _, ix in pending.values()), desc=f"judge ({kind})",
                   unit="caption", disable=not self.progress or not pending)
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(len(pending), 1)))
        try:
            futures = {pool.submit(self.ask, messages): key for key, (messages, _) in pending.items()}
            missing = 0
            for future in as_completed(futures):
                key, judgement = futures[future], future.result()
                if not judgement.missing and self.cache is not None:
                    self.cache.put(key, judgement.raw, model=self.model, kind=kind)  # type: ignore[arg-type]
                for i in pending[key][1]:
                    results[i] = judgement
                missing += len(pending[key][1]) * judgement.missing
                bar.update(len(pending[key][1]))
                bar.set_postfix(missing=missing, refresh=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
