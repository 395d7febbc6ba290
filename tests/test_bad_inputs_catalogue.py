"""The bad-input catalogue as a whole: every ``tests/test_bad_inputs_<area>.py`` module's ``CASES``
(``tests/bad_inputs.py``), at least 100 of them over every area the issue names, no two with one
name, and the counts the README states equal to the catalogue's (tried = clear: each case asserts a
clear error, a warning or a correct result; none is silent or obscure).

Example:
    >>> sum(len(cases) for cases in catalogue().values()) >= 100  # doctest: +SKIP
    True
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from pathlib import Path

from bad_inputs import AREAS, Case

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"


def catalogue() -> dict[str, list[Case]]:
    """Module name -> its ``CASES``."""
    found = {}
    for path in sorted(TESTS.glob("test_bad_inputs_*.py")):
        if path.stem == Path(__file__).stem:
            continue
        module = importlib.import_module(path.stem)
        cases = getattr(module, "CASES", None)
        assert isinstance(cases, list) and cases, f"{path.name} must define CASES, a non-empty list of bad_inputs.Case"
        assert all(isinstance(c, Case) for c in cases), f"{path.name}: every entry of CASES must be a Case"
        found[path.stem] = cases
    return found


def counts() -> dict[str, Counter]:
    """Area -> Counter of kinds (error / warning / handled)."""
    table: dict[str, Counter] = {area: Counter() for area in AREAS}
    for cases in catalogue().values():
        for case in cases:
            table[case.area][case.kind] += 1
    return table


def test_the_catalogue_is_large_covers_every_area_and_names_each_case_once():
    cases = [c for group in catalogue().values() for c in group]
    assert len(cases) >= 100, f"only {len(cases)} cases"
    names = Counter((c.area, c.name) for c in cases)
    assert not [n for n, k in names.items() if k > 1], [n for n, k in names.items() if k > 1]
    covered = {c.area for c in cases}
    assert covered == set(AREAS), f"areas without a case: {sorted(set(AREAS) - covered)}"


def test_the_readme_states_the_catalogues_counts():
    """The README's table row per area: ``| area | tried | clear errors | warnings | handled |``."""
    text = README.read_text()
    table = counts()
    for area, kinds in table.items():
        tried = sum(kinds.values())
        row = re.search(rf"^\| {area} \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text, flags=re.M)
        assert row, f"the README's catalogue table has no row for {area}"
        assert tuple(int(x) for x in row.groups()) == (tried, kinds["error"], kinds["warning"], kinds["handled"]), area
    total = sum(sum(k.values()) for k in table.values())
    assert re.search(rf"\*\*{total} cases\*\*", text), f"the README must state the total, **{total} cases**"
