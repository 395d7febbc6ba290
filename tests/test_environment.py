"""The suite runs where CI says it runs: the README's command in a fresh clone, under the
transformer-lens major version each CI environment expects (4.x, and 3.x beside SAELens)."""

from __future__ import annotations

import hashlib
import os
import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "hub"


def test_transformer_lens_major_version_is_the_expected_one():
    expected = os.environ.get("HOOKED_AVLLM_EXPECT_TRANSFORMER_LENS")  # set by .ci/run
    installed = version("transformer-lens").split(".")[0]
    allowed = (expected,) if expected else ("3", "4")
    assert installed in allowed, f"transformer-lens {version('transformer-lens')}; expected major {allowed}"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2, commands  # one installs and runs the demo, one installs and runs the tests
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), "'.ci/run' must run the README's test command verbatim"
    assert "git clone" in ci and "test ! -e " + "/".join(("..", "shared")) in ci  # a fresh clone, nothing beside it


def test_tests_read_nothing_outside_the_repository():
    beside = "/".join(("..", "shared"))  # the folder beside our CI checkout, which a user's clone lacks
    for path in (ROOT / "tests").glob("*.py"):
        text = path.read_text()
        assert beside not in text and "parents[1]" + ".parent" not in text, path.name


def test_every_hub_fixture_is_recorded_with_its_provenance():
    """Each copied hub file is listed in tests/fixtures/hub/SOURCES.md with the sha256 prefix it has."""
    sources = (FIXTURES / "SOURCES.md").read_text()
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    assert len(files) >= 29
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        section = sources.split(f"## {path.parent.name}")[1] if f"## {path.parent.name}" in sources else ""
        assert digest in sources, f"{path.relative_to(FIXTURES)} ({digest}) is not in SOURCES.md"
        assert path.name in section or path.name in ("vocab.json", "merges.txt"), path
