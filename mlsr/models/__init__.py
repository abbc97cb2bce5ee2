"""The encoders: the frozen dense backbone, the sparse head, their tokenizer, and where each is loaded from.

Importing this package imports nothing heavy; torch is imported by the modules that need it.
"""


def default_device() -> str:
    """The torch device models run on when none is given: "cuda" when a GPU is present, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
