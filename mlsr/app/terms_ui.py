"""The Suggest screen's term editor: the query as a two-column table (term, weight), an explicit "add a term"
control and the search button under it, and under them the line where a refused edit is said (where the user is
looking)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from mlsr.app.handlers import shown_in
from mlsr.serving.service import Service
from mlsr.serving.terms import with_term
from mlsr.app.views import WORD_PIECES, score_text
from mlsr.articles.markdown import literal

TABLE_COLUMNS = ["term", "weight"]
# a refusal is said under the buttons, which may sit at the bottom edge of the screen: bring it into view
STATUS_INTO_VIEW = ("() => { const status = document.querySelector('#term-table-status');"
                    " if (status?.innerText.trim()) status.scrollIntoView({block: 'nearest'}); }")


def term_editor() -> SimpleNamespace:
    """The editor's components, in an accordion under the results (the screen wires its search button)."""
    with gr.Accordion("Edit the query's terms and search again", open=False, elem_id="edit-terms"):
        gr.Markdown(
            "This table *is* the query. Change a weight, set it to 0 to drop a term, add a term below, or give"
            " a term a **negative** weight to push images that have it down. Then search again with exactly"
            f" this vector. {WORD_PIECES}"
        )
        # two columns, fixed: the cell menu offers no column to add or delete (Gradio 6.31 reads "fixed" from
        # this pair, though its type hint says int; its column_limits are "not yet implemented"); rows come from "Add"
        table = gr.Dataframe(headers=TABLE_COLUMNS, datatype=["str", "number"], interactive=True,
                             column_count=(2, "fixed"),  # type: ignore[arg-type]
                             row_count=1, elem_id="term-table", max_height=360)
        with gr.Row(equal_height=True):
            new_term = gr.Textbox(label="Add a term", placeholder="one word, e.g. harbour", scale=3, max_lines=1,
                                  elem_id="new-term")
            new_weight = gr.Number(value=1.0, label="weight", minimum=-100, maximum=100, scale=1, min_width=90,
                                   elem_id="new-term-weight")
            add = gr.Button("Add", scale=1, min_width=70, elem_id="add-term")
        search = gr.Button("Search with these terms", elem_id="search-edited")
        status = gr.Markdown(elem_id="term-table-status")  # a refused table is said here, where the eye is
    return SimpleNamespace(table=table, new_term=new_term, new_weight=new_weight, add=add, search=search,
                           status=status)


def wire_add_term(service: Service, editor: SimpleNamespace) -> None:
    """"Add" (or Enter in the term box): the term goes to the top of the table, checked as a search would check
    it; a refusal is said under the table and leaves the table and the typed term as they were."""

    def on_add(rows: pd.DataFrame, term: str, weight: float | None):
        table = with_term(rows.values.tolist(), term, 1.0 if weight is None else weight, service.encoder.vocab,
                          service.encoder.tokenizer)
        added = f"added {literal(table[0][0])} at the top (weight {score_text(float(table[0][1]))}): search again"
        return pd.DataFrame(table, columns=TABLE_COLUMNS), "", added + " to use it."

    def refused(message: str):
        return gr.update(), gr.update(), f"**{literal(message)}**"

    for trigger in (editor.add.click, editor.new_term.submit):
        trigger(shown_in(on_add, refused), [editor.table, editor.new_term, editor.new_weight],
                [editor.table, editor.new_term, editor.status], api_visibility="private",
                ).then(None, js=STATUS_INTO_VIEW)
