"""An honest "no good match": below a minimum score (the units of the score shown on each result) no image is
offered, and the message says how close the best came and which terms it shared. Plain Python: no torch."""

from __future__ import annotations

from typing import Protocol, TypeVar
from collections.abc import Callable, Sequence

from mlsr.errors import InputError


class _Scored(Protocol):
    """What the cutoff reads of a hit: its score (a service Hit, or any ranked row with one)."""

    @property
    def score(self) -> float: ...


HitT = TypeVar("HitT", bound=_Scored)
SHOWN_TERMS = 5


def check_min_score(min_score: object) -> float:
    """The minimum score as a float, 0 or more (0: off); InputError otherwise."""
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score < float("inf"):
        raise InputError(f"the minimum score must be a number, 0 or more, got {min_score!r}.")
    return float(min_score)


def no_match_message(best: float | None, min_score: float, shared: Sequence[str], what: str = "this section") -> str:
    """'no image in this gallery matches this section well (best score 1.5, below 2); strongest shared terms: ...'."""
    score = f" (best score {best:.3g}, below {min_score:g})" if best is not None else ""
    return (f"no image in this gallery matches {what} well{score}; strongest shared terms:"
            f" {', '.join(shared[:SHOWN_TERMS]) or 'none'}")


def below_minimum(hits: list[HitT], min_score: object, shared_terms: Callable[[HitT], Sequence]
                  ) -> tuple[list[HitT], str]:
    """(hits, "") when the best scores at least `min_score` (or it is 0), else ([], the message) with the terms
    the best hit shared (`shared_terms(hit)`: TermMatch-like objects with `.term`, largest first)."""
    min_score = check_min_score(min_score)
    if min_score <= 0 or (hits and hits[0].score >= min_score):
        return hits, ""
    shared = [match.term for match in shared_terms(hits[0])] if hits else []
    return [], no_match_message(hits[0].score if hits else None, min_score, shared, "this text")
