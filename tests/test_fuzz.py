"""Every bad input of ``tests/fuzz_cases.py`` gets the answer a user needs (see that module for the verdicts).

One test per category; a failure lists each case that was not ``clean`` with what happened.
"""

from __future__ import annotations

import os

import pytest

import fuzz_cases
from conftest import shared_data


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return fuzz_cases.build_env(tmp_path_factory.mktemp("fuzz"), shared_data)


@pytest.fixture(autouse=True)
def _usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("make", fuzz_cases.CATEGORIES, ids=lambda f: f.__name__)
def test_bad_inputs_get_one_clear_line(make, env) -> None:
    cases = make(env)
    assert cases, "a category without cases tests nothing"
    failures = []
    for case in cases:
        outcome = fuzz_cases.run_case(case)
        if outcome.verdict != "clean":
            failures.append(f"{outcome.verdict}: {case.name!r}: {outcome.detail[:300]}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)
