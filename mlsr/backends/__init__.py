"""Where search runs: the in-process index (default) or a Milvus collection holding the same vectors."""
