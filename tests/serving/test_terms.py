"""Term-level views: highlighted text, expansion terms, and the editable term table."""

import re

import numpy as np
import pytest
import scipy.sparse as sp
from transformers import AutoTokenizer

from mlsr.errors import InputError
from mlsr.serving.terms import expansion_terms, highlight_text, term_table, vector_from_terms, with_term
from mlsr.vocab import Vocabulary


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return Vocabulary.from_tokenizer(tokenizer)


def vector(vocab, weights: dict) -> sp.csr_matrix:
    row = np.zeros((1, len(vocab)), dtype=np.float32)
    for term, weight in weights.items():
        row[0, vocab.ids[term]] = weight
    return sp.csr_matrix(row)


def test_highlight_covers_the_text_exactly_and_weights_whole_words(tokenizer, vocab):
    text = "The Buffalo,  in a flamingos-market!"
    spans = highlight_text(text, vector(vocab, {"buffalo": 1.5, "flaming": 0.4, "##os": 0.9, "market": 0.2}),
                           tokenizer, vocab)
    assert "".join(span for span, _ in spans) == text
    weights = {span: weight for span, weight in spans if weight is not None}
    # "flamingos" is flaming + ##os: one word carrying its largest piece weight
    assert weights == {"Buffalo": 1.5, "flamingos": pytest.approx(0.9), "market": pytest.approx(0.2)}


def test_negative_weights_are_highlighted_too(tokenizer, vocab):
    spans = highlight_text("no dogs", vector(vocab, {"dogs": -2.0}), tokenizer, vocab)
    assert ("dogs", -2.0) in spans


def test_expansion_terms_leave_out_the_texts_own_words(tokenizer, vocab):
    query = vector(vocab, {"dog": 2.0, "puppy": 1.5, "beach": 1.0, "sand": 0.5})
    assert expansion_terms("A dog on the beach", query, tokenizer, vocab) == [("puppy", 1.5), ("sand", 0.5)]


def test_term_table_round_trips_to_the_same_vector(tokenizer, vocab):
    query = vector(vocab, {"dog": 2.0, "[CLS]": 0.25, ",": 0.5, "##s": 0.125, "beach": 1.0})
    table = term_table(query, vocab)
    assert [row[0] for row in table] == ["dog", "beach", ",", "##s"]  # every term, heaviest first; [CLS] is none
    rebuilt = vector_from_terms(table, vocab, tokenizer)
    np.testing.assert_allclose(rebuilt.toarray(), vector(vocab, {"dog": 2.0, ",": 0.5, "##s": 0.125, "beach": 1.0}).toarray())


def test_edits_delete_reweight_add_and_negate(tokenizer, vocab):
    rows = [["dog", 3.0], ["beach", -1.0], ["", 5.0], [None, 1.0], ["Sand", "0.5"], ("flamingos", 0.7)]
    edited = vector_from_terms(rows, vocab, tokenizer).toarray()[0]
    assert edited[vocab.ids["dog"]] == 3.0
    assert edited[vocab.ids["beach"]] == -1.0
    assert edited[vocab.ids["sand"]] == 0.5  # case-insensitive, number given as text
    assert edited[vocab.ids["flaming"]] == edited[vocab.ids["##os"]] == pytest.approx(0.7)
    assert np.count_nonzero(edited) == 5


@pytest.mark.parametrize("rows, message", [
    ([["dog", float("nan")]], "finite"),
    ([["dog", float("inf")]], "finite"),
    ([["dog", "lots"]], "not a number"),
    ([["dog", 101]], "above"),
    ([["\U0001f9ac", 1]], "not in the vocabulary"),
    ([["zzqxvwkjpq", 1]], "word pieces"),
    ([["dog", 0], ["", 1]], "empty"),
    ([], "empty"),
    ([["dog"]], "a term and a weight"),
    ([["dog", 1, 2]], "a term and a weight"),
    (["bu"], r"row 1: expected a term and a weight, \[term, weight\], got 'bu'"),  # a bare string is no row
    ("dog", "must be a list of"),
    ([["dog", 1]] * 2001, "more than"),
    ([["dog", 1], ["cat", 2], ["dog", 3]], r"row 3 \('dog'\): already given in row 1"),
    ([["Dog", 1], ["dog", 2]], r"row 2 \('dog'\): already given in row 1"),  # the same piece, spelled twice
    ([["water buffalo", 1]], "one word per row"),
    ([["[CLS]", 1]], "control token"),
    ([["[PAD]", 1]], "control token"),
    ([["x" * 1_000_000, 1]], r"^row 1: the term is 1,000,000 characters long; a term is one word \(at most 64\)\.$"),
    ([["dog", "9" * 500]], r"^row 1 \('dog'\): the weight must be a finite number, not '9{30,40}…\.$"),
    ([["dog", "w" * 500]], r"^row 1 \('dog'\): the weight 'w{30,40}… is not a number\.$"),  # echoed cut short
    ([[5, 1]], "the term must be text"),
    ([["dog", True]], "not a number"),
])
def test_nonsense_tables_are_refused(tokenizer, vocab, rows, message):
    with pytest.raises(InputError, match=message):
        vector_from_terms(rows, vocab, tokenizer)


def test_an_unedited_table_searches_with_its_query_control_tokens_included(app_encoder, app_index):
    from mlsr.serving.service import Service
    from mlsr.index.sparse import SparseIndex

    service = Service(app_encoder, SparseIndex.load(app_index), app_index)
    suggestion = service.suggest("a boy leads a buffalo through the market", k=9)
    controls = app_encoder.vocab.special_mask[suggestion.query.indices]
    assert controls.any()  # the head weights some control tokens: the table cannot name them
    assert not {term for term, _ in suggestion.table} & {app_encoder.vocab.terms[i] for i in suggestion.query.indices[controls]}
    _, rebuilt, _ = service.search_terms(suggestion.table, 9, keep_from=suggestion.query)
    np.testing.assert_array_equal(rebuilt.indices, suggestion.query.indices)
    np.testing.assert_allclose(rebuilt.data, suggestion.query.data, atol=5e-5)  # the table shows 4 decimals
    _, table_only, _ = service.search_terms(suggestion.table, 9)
    assert table_only.nnz == suggestion.query.nnz - controls.sum()


def test_adding_a_term_puts_it_first_checked_as_a_search_checks_it(tokenizer, vocab):
    rows = [["market", 1.5], ["", None], ["boy", 0.25]]
    before = [list(row) for row in rows]
    assert with_term(rows, " harbour ", 2, vocab, tokenizer) == [["harbour", 2.0], ["market", 1.5], ["boy", 0.25]]
    assert with_term([], "motorbike", "-1", vocab, tokenizer) == [["motorbike", -1.0]]  # a word of two pieces
    assert rows == before  # the caller's table is not changed
    refusals = {"market": "'market' is already in the table (row 1): change its weight there",
                "Market": "'Market' is already in the table (row 1, as 'market')",
                "  ": "type a term to add", "zzqxvwkjq": "the new term: 'zzqxvwkjq' is not in the vocabulary",
                "[CLS]": "the new term: '[CLS]' is a control token", "two words": "one word per row"}
    for term, message in refusals.items():
        with pytest.raises(InputError, match=re.escape(message)):
            with_term(rows, term, 1.0, vocab, tokenizer)
    with pytest.raises(InputError, match=r"the new term \('harbour'\): \|weight\| 101 is above 100"):
        with_term(rows, "harbour", 101, vocab, tokenizer)
    with pytest.raises(InputError, match=r"the new term \('harbour'\): the weight 'x' is not a number"):
        with_term(rows, "harbour", "x", vocab, tokenizer)
    # a word that shares a piece with a row's word gives that piece twice: 'motor' begins 'motorbike'
    with pytest.raises(InputError, match=r"'motor' is already in the table \(row 1, as 'motorbike'\)"):
        with_term([["motorbike", 1.0]], "motor", 1.0, vocab, tokenizer)


def test_word_pieces_are_explained_where_they_appear():
    from mlsr.app.views import WORD_PIECES, expansion_markdown

    assert WORD_PIECES in expansion_markdown([("market", 1.0), ("##dman", 0.5)])
    assert WORD_PIECES not in expansion_markdown([("market", 1.0), ("field", 0.5)])


def test_result_lines_read_well():
    from mlsr.app.views import nothing_matched, score_text, timing_markdown

    assert score_text(-0.0004) == "0.00" and score_text(-0.25) == "-0.25" and score_text(1.005) == "1.00"
    assert timing_markdown({"search": 1.0}, 1, 1).startswith("1 image · a query of 1 active term ·")
    assert timing_markdown({"search": 1.0}, 3, 2).startswith("2 images · a query of 3 active terms ·")
    assert timing_markdown({"search": 1.0}, 0, 0).startswith("**Nothing matched:** the query has no active terms")
    assert "shares any of the query's 2 active terms" in nothing_matched(2)


def test_gallery_captions_never_show_minus_zero(tmp_path):
    from mlsr.serving.results import Hit
    from mlsr.app.handlers import _gallery_items

    hits = [Hit(1, 0, "a", -0.0001, None, "cap"), Hit(2, 1, "b", -0.5, None, "")]
    assert [caption for _, caption in _gallery_items(hits, tmp_path / "missing.png")] == ["#1 · 0.00 · cap",
                                                                                       "#2 · -0.50 · b"]


def test_mcp_flag_and_environment(monkeypatch):
    import app

    assert app.parse_args([]).mcp is False and app.parse_args(["--mcp"]).mcp is True
    monkeypatch.setenv("MLSR_MCP", "1")
    assert app.parse_args([]).mcp is True
