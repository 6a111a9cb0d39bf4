"""Compare two variants on the queries they share (pure functions, no Flask).

A retrained challenger is served on a fresh query pool; older variants have pairs
on earlier pools too. Their overall approvals then mix different queries. This
restricts both to the queries where both have a pair, and says where they return the
same match (there they cannot differ).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from webapp.stats.ranking import wilson_interval


@dataclass
class Side:
    slug: str
    dope: int
    votes: int
    rate: float | None
    ci_low: float
    ci_high: float


def _side(slug: str, tallies: dict, queries: set) -> Side:
    dope = sum(tallies[q][0] for q in queries if q in tallies)
    votes = sum(tallies[q][1] for q in queries if q in tallies)
    low, high = wilson_interval(dope, votes)
    return Side(slug, dope, votes, dope / votes if votes else None, low, high)


def compare_on_shared(slug_a: str, pairs_a: dict, tally_a: dict,
                      slug_b: str, pairs_b: dict, tally_b: dict) -> dict:
    """Return both variants' approval on their shared queries.

    pairs_x: {query id: match id} of the variant's pairs; tally_x: {query id: (dope,
    judgments)} of the votes on those pairs.
    """
    shared = set(pairs_a) & set(pairs_b)
    same = {q for q in shared if pairs_a[q] == pairs_b[q]}
    differ = shared - same
    return {"shared_queries": len(shared), "same_match": len(same),
            "a": asdict(_side(slug_a, tally_a, shared)),
            "b": asdict(_side(slug_b, tally_b, shared)),
            "a_where_they_differ": asdict(_side(slug_a, tally_a, differ)),
            "b_where_they_differ": asdict(_side(slug_b, tally_b, differ))}
