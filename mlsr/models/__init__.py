"""The encoders: the frozen dense backbone, the sparse head, their tokenizer, and where each is loaded from.

Importing this package imports nothing heavy; torch is imported by the modules that need it.
"""
