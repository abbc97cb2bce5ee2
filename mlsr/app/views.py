"""What the screens show, as plain values: shaded spans, term chips, and the lines of text beside results.

No Gradio here: mlsr.app.ui and mlsr.app.article_ui put these into components. Captions, ids and terms
are written as literal text (`literal`), never as Markdown or HTML.
"""

from __future__ import annotations

from mlsr.articles.markdown import literal
from mlsr.vocab import Terms

WORD_PIECES = ("Terms that start with `##` are word pieces, the end of a longer word (`##dman` ends *goodman*):"
               " the vocabulary holds 30,522 words and pieces, and a rare word is spelled with several.")


def shaded(spans: list[tuple[str, float | None]]) -> list[tuple[str, float | None]]:
    """Spans for HighlightedText, which shades by a score in [-1, 1]: weights scaled by the largest magnitude.

    Line breaks become spaces: HighlightedText misplaces them when they sit inside unshaded spans.
    """
    top = max((abs(w) for _, w in spans if w), default=0.0) or 1.0
    return [(" ".join(span.split("\n")), None if weight is None else round(weight / top, 3)) for span, weight in spans]


def chips(terms: Terms) -> list[tuple[str, float | None]]:
    """Terms as shaded chips, 'term 1.23', separated by spaces."""
    spans: list[tuple[str, float | None]] = []
    for term, weight in terms:
        spans += [(f"{term} {score_text(weight)}", weight), (" ", None)]
    return shaded(spans[:-1])


def expansion_markdown(terms: Terms) -> str:
    """The query's terms that are not in the text; a note on word pieces when one of them is a piece."""
    if not terms:
        return "**Expansion terms:** none: the query uses only the words of your text."
    line = "**Expansion terms** (not in your text): " + ", ".join(f"{literal(t)} *{w:.2f}*" for t, w in terms)
    return line + (f"\n\n{WORD_PIECES}" if any(t.startswith("##") for t, _ in terms) else "")


def timing_text(timings: dict[str, float]) -> str:
    return " · ".join(f"{stage.replace('_', ' ')} {ms:.1f} ms" for stage, ms in timings.items())


def plural(count: int, noun: str) -> str:
    """'1 active term', '3 active terms'."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def timing_markdown(timings: dict[str, float], active_terms: int, shown: int) -> str:
    if not shown:
        return nothing_matched(active_terms) + " · " + timing_text(timings)
    return f"{plural(shown, 'image')} · a query of {plural(active_terms, 'active term')} · {timing_text(timings)}"


def nothing_matched(active_terms: int) -> str:
    """The line shown instead of a ranking when no indexed image shares a term with the query."""
    if not active_terms:
        return ("**Nothing matched:** the query has no active terms, so no image can score above 0. Try the"
                " `expand` mode or other words.")
    return (f"**Nothing matched:** no indexed image shares any of the query's {plural(active_terms, 'active term')}."
            " Try the `expand` mode or other words.")


def score_text(value: float) -> str:
    """A score with two decimals, never '-0.00'."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def why_markdown(rank: int, id: str, score: float, caption: str, shared: int, credit: str = "") -> str:
    """'#2 id: score 1.234 = the sum of the products of the 14 terms it shares with the query', then the
    caption and the credit line (`credit_markdown`)."""
    line = (f"**#{rank} {literal(id)}**: score {score:.3f} = the sum of the products (query × image weight) of the"
            f" {plural(shared, 'term')} it shares with the query")
    return line + (f"  \n*{literal(caption)}*" if caption else "") + (f"  \n{credit}" if credit else "")


def credit_markdown(hit) -> str:
    """A hit's credit as Markdown: the file linked to its source page, its author, its licence linked to the licence
    (a wiki's file), or the recorded credit line with its links; '' when the index records none."""
    from mlsr.articles.markdown import linked

    if hit.license:
        title = _link(literal(hit.id), hit.source or "")
        licence = _link(literal(hit.license), hit.license_url)
        return f"**Credit:** {title} by {literal(hit.author or 'unknown author')} · licence: {licence}"
    return f"**Credit:** {linked(hit.credit)}" if hit.credit else ""


def _link(text: str, url: str) -> str:
    """`[text](url)` for an http(s) URL (spaces and parentheses encoded), else the text alone."""
    if not url.startswith(("http://", "https://")):
        return text
    return f"[{text}]({url.replace(' ', '%20').replace('(', '%28').replace(')', '%29')})"
