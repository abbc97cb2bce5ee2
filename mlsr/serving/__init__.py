"""The search service behind the app, its API and the command line: models and an index loaded once, and what
the demo does with them (suggest, explain, image terms, sparse vs dense), without any UI."""
