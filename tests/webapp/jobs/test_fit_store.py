"""StoredFit: the one reader of a stored fit, for the board, the team page and pairing."""

import json

import pytest

from webapp.jobs.fit_store import StoredFit

BODY = {"corrected": {"settled": True, "leader": "a", "judgments": 900,
                      "variants": {"a": {"estimate": 0.7, "ci_low": 0.6, "ci_high": 0.8}},
                      "reference": {"random": {"estimate": 0.1, "ci_low": 0.05,
                                               "ci_high": 0.2}}},
        "raw": {"variants": {"a": {"estimate": 0.72}}},
        "voters": {"voters": 40, "excluded": 2},
        "allocation": {"focus": [[3, 5, 0.75], [3, 7, 0.25]]}}


def test_a_fit_answers_from_its_body():
    fit = StoredFit.parse(json.dumps(BODY))
    assert fit.exists and fit.settled and fit.voters["excluded"] == 2
    assert fit.figures("a", control=False)["estimate"] == 0.7
    assert fit.figures("random", control=True)["ci_high"] == 0.2
    assert fit.figures("a", control=False, part="raw") == {"estimate": 0.72}
    assert fit.figures("b", control=False) is None
    positions = {3: 0, 5: 1, 7: 2}
    assert fit.focus(positions.__getitem__) == {(0, 1): 0.75, (0, 2): 0.25}


def test_a_focus_naming_a_variant_the_design_lacks_is_no_focus():
    fit = StoredFit.parse(json.dumps(BODY))
    assert fit.focus({3: 0, 5: 1}.__getitem__) is None  # 7 is gone
    assert fit.focus([3, 5, 7].index) == {(0, 1): 0.75, (0, 2): 0.25}


@pytest.mark.parametrize("text", [None, "", "{not json", "[1, 2]", '{"corrected": {}}'])
def test_no_fit_or_a_bad_body_knows_nothing(text):
    fit = StoredFit.parse(text)
    assert not fit.settled and fit.figures("a", control=False) is None
    assert fit.focus([3, 5].index) is None
    assert fit.corrected.get("leader") is None
