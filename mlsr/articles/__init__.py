"""Articles: split into sections, images chosen for each, rendered as Markdown, wikitext or HTML."""
