"""Which models made a set of vectors: written into an index's manifest, checked again when it is searched.

Plain data (no torch), so the index can check it without loading a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mlsr.errors import IndexMismatchError


def recorded_name(source: str | None, revision: str | None) -> str | None:
    """How a model is named in what may be published: a Hub id as is, a local folder by its last part only (an
    index never records where the machine that built it keeps its files)."""
    if source is None or revision is not None or not Path(source).expanduser().exists():
        return source
    return Path(source).expanduser().resolve().name


@dataclass(frozen=True)
class ModelRef:
    """One model: the name it was loaded by, its Hub commit (None for a local folder), a hash of its weights."""

    id: str | None = None
    revision: str | None = None
    fingerprint: str | None = None

    @classmethod
    def from_json(cls, data: object) -> ModelRef:
        data = data if isinstance(data, dict) else {}
        return cls(**{key: (str(data[key]) if data.get(key) is not None else None)
                      for key in ("id", "revision", "fingerprint")})


@dataclass(frozen=True)
class ModelRecord:
    """The backbone, head and tokenizer behind some vectors, and the vocabulary and dense sizes they imply.

    The backbone's fingerprint is None when its weights were never loaded (vectors imported from a
    published dataset): then only the head and the vocabulary can be checked.
    """

    backbone: ModelRef
    head: ModelRef
    tokenizer: ModelRef
    vocab_size: int
    vocab_sha256: str | None = None
    dense_size: int | None = None

    def to_json(self) -> dict:
        """The manifest's `models` field."""
        return {**{role: asdict(getattr(self, role)) for role in ("backbone", "head", "tokenizer")},
                "vocab_size": self.vocab_size, "vocab_sha256": self.vocab_sha256, "dense_size": self.dense_size}

    @classmethod
    def from_json(cls, data: object) -> ModelRecord | None:
        """A manifest's `models` field (None when the index records no models)."""
        if not isinstance(data, dict):
            return None
        size = data.get("vocab_size")
        dense = data.get("dense_size")
        return cls(ModelRef.from_json(data.get("backbone")), ModelRef.from_json(data.get("head")),
                   ModelRef.from_json(data.get("tokenizer")), int(size) if isinstance(size, int) else 0,
                   data.get("vocab_sha256"), int(dense) if isinstance(dense, int) else None)

    def with_backbone(self, backbone: ModelRef) -> ModelRecord:
        """The same record naming another backbone (the one that made imported vectors)."""
        return replace(self, backbone=backbone)


def check_compatible(recorded: ModelRecord | None, loaded: ModelRecord, *, vocab_size: int,
                     vocab_sha256: str | None, where: str) -> None:
    """Raise IndexMismatchError unless vectors made by `recorded` can be scored by the `loaded` models.

    `vocab_size` and `vocab_sha256` are the index's own; scores against another vocabulary or other
    weights would be meaningless.
    """
    if loaded.vocab_size != vocab_size:
        raise IndexMismatchError(f"{where} has {vocab_size:,} terms, the loaded head scores {loaded.vocab_size:,}.")
    recorded_tokenizer = recorded.tokenizer.id if recorded else None
    if vocab_sha256 is not None and vocab_sha256 != loaded.vocab_sha256:
        raise IndexMismatchError(
            f"{where} was built with another vocabulary than the loaded tokenizer's; load the tokenizer"
            f" it was built with ({recorded_tokenizer or 'unknown'!r}) or rebuild the index."
        )
    if recorded is None:
        return
    for role in ("head", "backbone"):
        was, now = getattr(recorded, role), getattr(loaded, role)
        if was.fingerprint and now.fingerprint and was.fingerprint != now.fingerprint:
            raise IndexMismatchError(
                f"{where} was built with the {role} {was.id or 'unknown'!r} (weights {was.fingerprint}), but the"
                f" loaded {role} {now.id!r} has other weights ({now.fingerprint}). Load the {role} it"
                f" was built with (--{role} ...) or rebuild the index with this one."
            )
