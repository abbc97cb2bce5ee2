"""Exceptions raised at mlsr's boundaries; each message says what went wrong and how to fix it."""


class MlsrError(Exception):
    """Base class of every error mlsr raises on purpose."""


class InputError(MlsrError, ValueError):
    """A text, image or term table given by a user cannot be used."""


class ModelLoadError(MlsrError, OSError):
    """A model, tokenizer or dataset could not be found, downloaded or read."""


class IndexFormatError(MlsrError, OSError):
    """An index folder is missing, corrupt, or written by an incompatible version."""


class IndexMismatchError(IndexFormatError):
    """An index was built with other models or another vocabulary than the ones loaded."""


class BackendError(MlsrError, ConnectionError):
    """A search backend (Milvus) cannot be reached, or holds no usable copy of the index."""
