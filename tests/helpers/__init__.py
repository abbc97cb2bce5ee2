"""Builders shared by the tests and the benchmark scripts: tiny models, data with known content, the app."""
