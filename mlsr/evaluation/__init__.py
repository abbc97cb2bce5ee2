"""Retrieval evaluation: metrics, the one loop that runs queries against an index, and the recipes."""
