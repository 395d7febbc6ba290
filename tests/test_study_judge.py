"""Caption scoring (hooked_avllm.study.scoring, hooked_avllm.study.judge): the LLM judge against a
small OpenAI-compatible server started here (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port 0)
that plays the judge with scripted behaviours chosen by a tag in the candidate caption
(``[[ok:80]]``, ``[[500]]``, ``[[429-once]]``...), the keyword scorer against the toy's own answer
parser, and the fidelity table's handling of missing judgements.

The client talks to the server through the real ``openai`` library, so what is tested is what a
user's run against ``vllm serve`` goes through (request shape, status codes, headers, timeouts).
Timeouts and backoffs are tiny so that the file runs in seconds."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("openai")

from hooked_avllm.study import judge as judge_module  # noqa: E402
from hooked_avllm.study.judge import AnswerCache, LLMJudge, build_messages, parse_reply, retry_after_seconds  # noqa: E402
from hooked_avllm.study.scoring import (  # noqa: E402
    CaptionRow,
    Judgement,
    KeywordScorer,
    ScoredCaption,
    Scorer,
    fidelity_table,
    score_rows,
)

ROOT = Path(__file__).resolve().parents[1]
TAG = re.compile(r"\[\[([a-z0-9-]+)(?::(\d+))?\]\]")
SLOW_S = 1.0  # how long the server sleeps for [[slow]]: well past the client timeout below
CLIENT_TIMEOUT_S = 0.3


# ------------------------------------------------------------------------------------ the fake judge

def completion(content: str, model: str) -> dict:
    """An OpenAI chat.completion object, as vLLM returns it."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def ok_reply(score: int, style: str) -> str:
    body = json.dumps({"score": score, "reason": "scripted"})
    if style == "think":
        return f"<think>The reference has a dog.\nThe candidate too.</think>\n\n{body}"
    if style == "fence":
        return f"<think>Comparing.</think>\n```json\n{body}\n```"
    return body


class Handler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions with a behaviour chosen by the tag in the candidate caption."""

    server: "JudgeServer"

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting ([[slow]])
            pass

    def error(self, status: int, message: str, headers: dict | None = None) -> None:
        self.send(status, {"error": {"message": message, "type": "test", "code": status}}, headers)

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        candidate = request["messages"][-1]["content"].split("Candidate caption:")[-1]
        match = TAG.search(candidate)
        behaviour, score = (match.group(1), int(match.group(2) or 70)) if match else ("ok", 70)
        seen = self.server.arrive(candidate, request)
        try:
            self.respond(behaviour, score, seen, request["model"])
        finally:
            self.server.leave()

    def respond(self, behaviour: str, score: int, seen: int, model: str) -> None:
        """``seen``: how many requests for this candidate arrived before this one."""
        if behaviour in ("ok", "think", "fence"):
            return self.send(200, completion(ok_reply(score, behaviour), model))
        if behaviour == "hold":  # a judge that takes a while: lets requests overlap
            time.sleep(0.15)
            return self.send(200, completion(ok_reply(score, "ok"), model))
        if behaviour == "malformed":
            return self.send(200, completion("<think>hmm</think> I would give it 80 out of 100.", model))
        if behaviour == "slow" or (behaviour == "slow-once" and seen == 0):
            time.sleep(SLOW_S)
            return self.send(200, completion(ok_reply(score, "ok"), model))
        if behaviour == "500" or (behaviour == "500-once" and seen == 0):
            return self.error(500, "the judge crashed")
        if behaviour == "429-once" and seen == 0:
            return self.error(429, "slow down", {"Retry-After": "0.4"})
        if behaviour == "429-long":
            return self.error(429, "come back tomorrow", {"Retry-After": "86400"})
        if behaviour == "400":
            return self.error(400, "this model's maximum context length is 10 tokens")
        return self.send(200, completion(ok_reply(score, "ok"), model))


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True  # a [[slow]] handler still sleeping must not hold the test up at shutdown

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.seen: dict[str, list[float]] = {}  # candidate -> arrival times
        self.models: list[str] = []
        self.in_flight = self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        return sum(len(times) for times in self.seen.values())

    def arrive(self, candidate: str, request: dict) -> int:
        with self.lock:
            times = self.seen.setdefault(candidate.strip(), [])
            times.append(time.monotonic())
            self.models.append(request["model"])
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(times) - 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()
            self.models.clear()
            self.max_in_flight = 0

    def count(self, tag: str) -> int:
        """Requests whose candidate carries ``tag``."""
        return sum(len(times) for candidate, times in self.seen.items() if tag in candidate)


@pytest.fixture(scope="module")
def server():
    server = JudgeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake(server, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must be reached directly
    server.reset()
    return server


def make_judge(server: JudgeServer, **options) -> LLMJudge:
    settings = dict(api_key="test", timeout=CLIENT_TIMEOUT_S, max_retries=2, backoff=0.01, max_backoff=0.05,
                    concurrency=4, progress=False)
    return LLMJudge("test-judge", base_url=server.url, **{**settings, **options})


# ------------------------------------------------------------------------------------ the judge's replies

@pytest.mark.parametrize("tag, score", [("[[ok:80]]", 0.8), ("[[think:35]]", 0.35), ("[[fence:100]]", 1.0), ("[[ok:0]]", 0.0)])
def test_a_well_formed_reply_is_scored_on_0_to_1(fake, tag, score):
    """Plain JSON, JSON after a <think> block, and JSON in a code fence after one: the integer
    0-100 becomes score/100, in one request, with the raw reply and the reason kept."""
    judgement = make_judge(fake).judge_one(f"a dog barks {tag}", "a dog barks", "audio")
    assert judgement.score == pytest.approx(score, abs=1e-12)
    assert (judgement.error, judgement.attempts, judgement.reason) == (None, 1, "scripted")
    assert json.dumps({"score": round(score * 100), "reason": "scripted"}) in judgement.raw
    assert fake.models == ["test-judge"]


def test_a_malformed_reply_is_missing_with_the_error_and_not_retried(fake):
    judgement = make_judge(fake).judge_one("a dog [[malformed]]", "a dog barks", "audio")
    assert judgement.missing and judgement.score is None
    assert judgement.error.startswith("reply is not JSON") and "80 out of 100" in judgement.error
    assert judgement.raw.endswith("I would give it 80 out of 100.")
    assert judgement.attempts == 1 and fake.count("[[malformed]]") == 1


def test_a_timeout_is_retried_then_missing(fake):
    """The server sleeps past the client's timeout on every try: 1 + max_retries requests, then a
    missing judgement that says it timed out."""
    start = time.monotonic()
    judgement = make_judge(fake, max_retries=1).judge_one("a dog [[slow]]", "a dog barks", "audio")
    assert judgement.missing and judgement.attempts == 2
    assert "timed out" in judgement.error and "gave up after 2 attempts" in judgement.error
    assert time.monotonic() - start < SLOW_S * 2  # the client did not wait for the server's replies
    assert fake.count("[[slow]]") == 2


def test_a_timeout_then_a_reply_is_scored(fake):
    judgement = make_judge(fake).judge_one("a dog [[slow-once:60]]", "a dog barks", "audio")
    assert (judgement.score, judgement.attempts) == (0.6, 2)


def test_a_500_then_success_is_retried(fake):
    judgement = make_judge(fake).judge_one("a dog [[500-once:90]]", "a dog barks", "audio")
    assert (judgement.score, judgement.attempts, judgement.error) == (0.9, 2, None)
    assert fake.count("[[500-once") == 2


def test_a_persistent_500_is_missing_with_the_error(fake):
    judgement = make_judge(fake, max_retries=3).judge_one("a dog [[500]]", "a dog barks", "audio")
    assert judgement.missing and judgement.attempts == 4 and fake.count("[[500]]") == 4
    assert judgement.error.startswith("HTTP 500") and "the judge crashed" in judgement.error
    assert "gave up after 4 attempts" in judgement.error


def test_a_429_waits_for_retry_after_then_succeeds(fake):
    """Backoff is 0.01 s here, so the 0.4 s between the two requests is the server's Retry-After."""
    judgement = make_judge(fake).judge_one("a dog [[429-once:75]]", "a dog barks", "audio")
    assert (judgement.score, judgement.attempts) == (0.75, 2)
    first, second = fake.seen["a dog [[429-once:75]]"]
    assert second - first >= 0.4 - 0.02


def test_a_429_asking_to_wait_too_long_gives_up_at_once(fake):
    judgement = make_judge(fake, max_retry_after=5).judge_one("a dog [[429-long]]", "a dog barks", "audio")
    assert judgement.missing and judgement.attempts == 1
    assert "HTTP 429" in judgement.error and "max_retry_after=5 s" in judgement.error


def test_a_400_is_not_retried(fake):
    judgement = make_judge(fake).judge_one("a dog [[400]]", "a dog barks", "audio")
    assert judgement.missing and judgement.attempts == 1 and fake.count("[[400]]") == 1
    assert judgement.error.startswith("HTTP 400") and "not retried" in judgement.error


def test_no_caption_or_no_reference_is_missing_without_a_request(fake):
    judgements = make_judge(fake).score([None, "a dog [[ok]]"], ["a dog barks", "  "], "video")
    assert [j.missing for j in judgements] == [True, True] and fake.requests == 0
    assert "not generated" in judgements[0].error and "no reference" in judgements[1].error


def test_results_come_back_in_order_and_identical_requests_are_sent_once(fake):
    captions = [f"clip {i} [[ok:{10 * i}]]" for i in range(6)] + ["clip 2 [[ok:20]]"]
    judgements = make_judge(fake).score(captions, ["ref"] * 7, "audio")
    assert [j.score for j in judgements] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.2]
    assert fake.requests == 6


# ------------------------------------------------------------------------------------ concurrency

@pytest.mark.parametrize("concurrency, expected", [(4, 4), (1, 1)])
def test_concurrency_bounds_the_requests_in_flight(fake, concurrency, expected):
    """Eight 0.15 s requests: with concurrency=4 the server sees 4 at once (never more), with 1
    it sees them one after another."""
    captions = [f"clip {i} [[hold]]" for i in range(8)]
    judgements = make_judge(fake, concurrency=concurrency).score(captions, ["ref"] * 8, "audio")
    assert all(j.score == 0.7 for j in judgements) and fake.requests == 8
    if expected == 1:
        assert fake.max_in_flight == 1
    else:
        assert 1 < fake.max_in_flight <= expected


# ------------------------------------------------------------------------------------ the cache

def test_a_rerun_reads_the_cache_and_retries_only_failures(fake, tmp_path):
    cache = tmp_path / "answers.jsonl"
    captions = ["clip 0 [[ok:10]]", "clip 1 [[think:20]]", "clip 2 [[malformed]]", "clip 3 [[500]]", "clip 4 [[400]]"]
    first = make_judge(fake, cache=cache, max_retries=1).score(captions, ["ref"] * 5, "audio")
    assert [j.score for j in first] == [0.1, 0.2, None, None, None]
    assert len(cache.read_text().splitlines()) == 2  # only the two scored replies were written

    fake.reset()
    second = make_judge(fake, cache=cache, max_retries=1).score(captions, ["ref"] * 5, "audio")
    assert [j.score for j in second] == [0.1, 0.2, None, None, None]
    assert [(j.cached, j.attempts) for j in second[:2]] == [(True, 0), (True, 0)]
    assert second[0].raw == first[0].raw and second[1].reason == "scripted"
    assert fake.count("[[ok") == fake.count("[[think") == 0  # served from the cache
    assert (fake.count("[[malformed"), fake.count("[[500"), fake.count("[[400")) == (1, 2, 1)  # failures asked again

    fake.reset()
    third = make_judge(fake, cache=cache).score(captions[:2], ["ref"] * 2, "audio")
    assert fake.requests == 0 and [j.score for j in third] == [0.1, 0.2]


def test_the_cache_key_covers_model_prompt_version_kind_and_settings(fake, tmp_path, monkeypatch):
    cache = tmp_path / "answers.jsonl"
    make_judge(fake, cache=cache).score(["clip [[ok]]"], ["ref"], "audio")
    make_judge(fake, cache=cache).score(["clip [[ok]]"], ["ref"], "audio")
    assert fake.requests == 1
    make_judge(fake, cache=cache).score(["clip [[ok]]"], ["ref"], "video")  # another prompt
    LLMJudge("another-judge", base_url=fake.url, api_key="test", progress=False, cache=cache).score(["clip [[ok]]"], ["ref"], "audio")
    make_judge(fake, cache=cache, temperature=0.7).score(["clip [[ok]]"], ["ref"], "audio")
    monkeypatch.setattr(judge_module, "PROMPT_VERSION", "av-clair-test")
    make_judge(fake, cache=cache).score(["clip [[ok]]"], ["ref"], "audio")
    assert fake.requests == 5


def test_a_damaged_cache_line_or_an_unparsable_cached_reply_is_a_miss(tmp_path):
    path = tmp_path / "answers.jsonl"
    cache = AnswerCache(path)
    cache.put("good", '{"score": 30, "reason": "fine"}', model="m", kind="audio")
    cache.put("stale", '{"score": 0.3, "reason": "on another scale"}', model="m", kind="audio")
    with path.open("a") as file:
        file.write('{"key": "cut", "reply": "{\\"sco')  # a run killed mid-write
    reread = AnswerCache(path)
    assert len(reread) == 2 and reread.get("cut") is None
    judge = LLMJudge("m", api_key="test", cache=path, progress=False)
    assert judge._cached("good").score == 0.3 and judge._cached("stale") is None


# ------------------------------------------------------------------------------------ parsing, prompts, arguments

@pytest.mark.parametrize("reply, error", [
    ('{"score": 0.8, "reason": "x"}', "got 0.8 (a 0-1 answer?)"),
    ('{"score": 150, "reason": "x"}', "got 150 (out of range)"),
    ('{"score": -5, "reason": "x"}', "got -5 (out of range)"),
    ('{"score": "80", "reason": "x"}', "got '80'"),
    ('{"score": true, "reason": "x"}', "got True"),
    ('{"score": NaN, "reason": "x"}', "got nan"),
    ('{"reason": "x"}', "lacks the key(s) ['score']"),
    ('{"score": 80, "reason": null}', "reason must be a string"),
    ('[80, "x"]', "not an object"),
    ("<think>long reasoning that was cut off by max_to", "never closes"),
    ("", "empty reply"),
    (None, "empty reply"),
    ('Here it is: {"score": 80, "reason": "x"}', "not JSON"),
])
def test_a_reply_that_is_not_the_asked_json_is_missing_never_clamped(reply, error):
    judgement = parse_reply(reply)
    assert judgement.missing and error in judgement.error and judgement.raw == reply


def test_a_reply_after_a_think_block_in_a_fence_parses():
    reply = '<think>{"score": 5, "reason": "draft"}</think>\n```\n{"score": 85.0, "reason": " Both sounds. "}\n```'
    assert (parse_reply(reply).score, parse_reply(reply).reason) == (0.85, "Both sounds.")
    assert parse_reply('</think>{"score": 40, "reason": "x"}').score == 0.4  # the template opened <think> in the prompt


def test_the_prompts_hold_worked_examples_whose_replies_parse():
    for kind in ("audio", "video"):
        messages = build_messages("caption", "reference", kind)
        assert messages[0]["role"] == "system" and "JSON" in messages[0]["content"]
        examples = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(examples) == 3 and all(not parse_reply(e).missing for e in examples)
        assert messages[-1] == {"role": "user", "content": messages[-1]["content"]} and "caption" in messages[-1]["content"]
    assert build_messages("c", "r", "audio")[0] != build_messages("c", "r", "video")[0]


def test_retry_after_headers():
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "20", "retry-after": "9"}) == 0.02
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


@pytest.mark.parametrize("option, value", [("concurrency", 0), ("concurrency", 2.5), ("max_retries", -1), ("timeout", 0),
                                           ("backoff", -1.0), ("max_tokens", 0)])
def test_bad_arguments_are_refused_by_name(option, value):
    with pytest.raises(ValueError, match=rf"{option} must be .*got {value!r}"):
        LLMJudge("judge", api_key="test", **{option: value})


def test_the_library_imports_without_the_openai_client():
    code = ("import sys, hooked_avllm, hooked_avllm.study, hooked_avllm.study.scoring, hooked_avllm.study.judge; "
            "print('openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------ keyword scorer

def test_the_keyword_scorer_reproduces_the_toys_answer_parser():
    """With the toy's vocabularies, the score is 1 exactly when ``toy.data.parse_answer`` reads the
    reference as the answer: on every templated answer (and answers naming two sounds, or none)."""
    from hooked_avllm.toy.data import OBJECT_WORDS, SOUND_WORDS, parse_answer

    scorer = KeywordScorer(vocabularies={"audio": SOUND_WORDS, "video": OBJECT_WORDS})
    answers = [f"I see a {o} and I hear {s}." for o in OBJECT_WORDS for s in SOUND_WORDS]
    answers += [f"I hear {a} and {b}." for a in SOUND_WORDS[:4] for b in SOUND_WORDS[3:7]] + ["I hear nothing.", ""]
    for kind, vocabulary, slot in (("audio", SOUND_WORDS, 1), ("video", OBJECT_WORDS, 0)):
        for reference in vocabulary:
            got = [j.score for j in scorer.score(answers, [reference] * len(answers), kind)]
            assert got == [float(parse_answer(a)[slot] == reference) for a in answers], (kind, reference)


def test_the_keyword_scorer_matches_whole_words_phrases_and_synonyms():
    scorer = KeywordScorer(synonyms={"barking": ["barks", "a dog yapping"]})
    captions = ["A DOG BARKS!", "Then a dog yapping.", "Embarking on a ship", "fire truck siren", "a fire, a truck"]
    references = ["barking", "barking", "barking", "fire truck", "fire truck"]
    assert [j.score for j in scorer.score(captions, references, "audio")] == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert isinstance(scorer, Scorer)


def test_the_keyword_scorer_refuses_what_it_cannot_score():
    scorer = KeywordScorer(vocabularies={"audio": ["barking"]})
    assert scorer.score([None], ["barking"], "audio")[0].error.startswith("no caption")
    with pytest.raises(ValueError, match="one reference per caption: got 2 captions and 1 references"):
        scorer.score(["a", "b"], ["barking"], "audio")
    with pytest.raises(ValueError, match="kind must be 'audio' or 'video', got 'sound'"):
        scorer.score(["a"], ["barking"], "sound")
    with pytest.raises(ValueError, match="'mooing' is not in the audio vocabulary"):
        scorer.score(["a cow moos"], ["mooing"], "audio")
    with pytest.raises(TypeError, match="not one string"):
        scorer.score("a dog barks", ["barking"], "audio")


# ------------------------------------------------------------------------------------ fidelity table

def scored(condition: str, kind: str, *scores: float | None) -> list[ScoredCaption]:
    return [ScoredCaption(f"clip{i}", condition, kind, Judgement(s) if s is not None else Judgement(None, error="timeout"))
            for i, s in enumerate(scores)]


def test_fidelity_is_x100_over_the_scored_and_missing_is_counted_apart():
    rows = scored("factual", "audio", 1.0, 0.5, None, 0.0) + scored("factual", "video", 1.0, 1.0, 1.0, 1.0)
    rows += scored("counterfactual", "audio", 0.2, None) + scored("counterfactual", "video", 0.9, 0.7)
    table = fidelity_table(rows)
    assert list(table.index) == ["factual", "counterfactual"]
    assert table.loc["factual", "audio_fidelity"] == pytest.approx(100 * 1.5 / 3)  # not 100 * 1.5 / 4
    assert (table.loc["factual", "audio_scored"], table.loc["factual", "audio_missing"]) == (3, 1)
    assert table.loc["counterfactual", "audio_fidelity"] == pytest.approx(20.0)
    assert table.loc["counterfactual", "video_fidelity"] == pytest.approx(80.0)
    assert table.loc["factual", "audio_sem"] == pytest.approx(100 * 0.5 / math.sqrt(3))  # sd 0.5 over 3 scores
    assert math.isnan(table.loc["counterfactual", "audio_sem"])  # one score: no standard error
    assert list(table["clips"]) == [4, 2] and "never scored 0" in table.attrs["note"]


def test_a_condition_with_every_judgement_missing_shows_nan_and_warns():
    rows = scored("knockout", "audio", None, None) + scored("knockout", "video", 1.0, 0.0)
    with pytest.warns(UserWarning, match="'knockout': all 2 audio judgements are missing"):
        table = fidelity_table(rows)
    assert math.isnan(table.loc["knockout", "audio_fidelity"])
    assert (table.loc["knockout", "audio_scored"], table.loc["knockout", "audio_missing"]) == (0, 2)
    assert table.loc["knockout", "video_fidelity"] == 50.0


def test_a_kind_not_scored_shows_nan_with_zero_counts_and_duplicates_are_refused():
    table = fidelity_table(scored("factual", "audio", 1.0))
    assert math.isnan(table.loc["factual", "video_fidelity"]) and table.loc["factual", "video_missing"] == 0
    with pytest.raises(ValueError, match="clip 'clip0' has two audio judgements under condition 'factual'"):
        fidelity_table(scored("factual", "audio", 1.0) * 2)
    with pytest.raises(ValueError, match="rows is empty"):
        fidelity_table([])


def test_the_judge_end_to_end_feeds_the_table(fake):
    """Caption rows through the judge (scripted: clip 2's audio judgement fails) into the table."""
    rows = [CaptionRow("c0", "factual", "a dog barks [[ok:90]]", "a dog barks", "a dog in a yard"),
            CaptionRow("c1", "factual", "a cat [[ok:50]]", "a cat meows", "a cat on a sofa"),
            CaptionRow("c0", "counterfactual", "a dog barks [[ok:10]]", "rain falls", "a dog in a yard"),
            CaptionRow("c1", "counterfactual", "a cat [[400]]", "a bell rings", "a cat on a sofa")]
    results = score_rows(make_judge(fake), rows)
    assert [(r.clip_id, r.condition, r.kind) for r in results[:2]] == [("c0", "factual", "audio"), ("c1", "factual", "audio")]
    table = fidelity_table(results)
    assert table.loc["factual", "audio_fidelity"] == pytest.approx(70.0)
    assert table.loc["counterfactual", "audio_fidelity"] == pytest.approx(10.0)
    assert (table.loc["counterfactual", "audio_scored"], table.loc["counterfactual", "audio_missing"]) == (1, 1)
    assert table.loc["counterfactual", "video_missing"] == 1 and fake.requests == 8
