"""What the service answers: small dataclasses with a `to_json()` for the API (weights to 4 decimals)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import scipy.sparse as sp

from mlsr.vocab import Terms


@dataclass(frozen=True)
class Hit:
    """One ranked item, as the API returns it: the row, the item id, the score, a caption, `image`: where the app
    serves its picture (`thumbnails/<id>`, relative to the app's root URL; MCP answers make it absolute on the
    app's origin; None only when the item has no picture at all), and `source`: the original's URL, for a link
    (never an `<img src>`), when the item came from the web."""

    rank: int
    row: int
    id: str
    score: float
    image: str | None
    caption: str
    source: str | None = None
    credit: str = ""  # the credit the licence requires (title, author, source, licence), when the index records it
    author: str = ""
    license: str = ""
    license_url: str = ""


@dataclass
class Suggestion:
    """Ranked images for a text, with the query vector that ranked them and its term-level views."""

    text: str
    mode: str
    hits: list[Hit]
    query: sp.csr_matrix
    highlights: list[tuple[str, float | None]]
    expansion: Terms
    table: list[list]
    timings: dict[str, float] = field(default_factory=dict)
    no_match: str = ""  # why no image is shown: the best scored below the minimum ("" otherwise)

    @property
    def active_terms(self) -> int:
        return int(self.query.nnz)

    def to_json(self) -> dict:
        return {
            "text": self.text, "mode": self.mode, "active_terms": self.active_terms,
            "query_terms": self.table, "expansion_terms": rounded(self.expansion), "no_good_match": self.no_match,
            "results": [asdict(hit) for hit in self.hits], "timings_ms": self.timings,
        }


@dataclass
class ImageTerms:
    """An image's weighted terms and the nearest indexed images by sparse dot product."""

    terms: Terms
    active_terms: int
    similar: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)
    query: sp.csr_matrix | None = None  # the image's own vector, which ranked `similar`

    def to_json(self) -> dict:
        return {"active_terms": self.active_terms, "terms": rounded(self.terms),
                "similar": [asdict(hit) for hit in self.similar], "timings_ms": self.timings}


@dataclass
class Comparison:
    """The same text ranked by the sparse index and by the dense FAISS index."""

    sparse: list[Hit]
    dense: list[Hit]
    overlap: float  # |top-k sparse ∩ top-k dense| / k
    active_terms: int
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"sparse": [asdict(h) for h in self.sparse], "dense": [asdict(h) for h in self.dense],
                "overlap_at_k": self.overlap, "active_terms": self.active_terms, "timings_ms": self.timings}


def rounded(terms) -> list[list]:
    """[[term, weight], ...] with weights to 4 decimals: every answer of the API writes weights so."""
    return [[term, round(float(weight), 4)] for term, weight in terms]
