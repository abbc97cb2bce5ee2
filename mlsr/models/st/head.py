"""The D2S head as a sentence-transformers module: dense vectors in, (n, vocab) term weights out.

It reads `dense_embedding` (one row per text window or image) from the input module, masks a window's weights
to `term_ids` when the input module asked for no_expand, and max-pools a text's windows into one row, as
`Encoder.encode_text` does. Saved as an mlsr head folder (its own `config.json` and `model.safetensors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Module

from mlsr.errors import ModelLoadError
from mlsr.models.head import SparseHead


class D2SHead(Module):
    """w = log1p(ReLU(vocab_projector(LayerNorm(proj(x))))) over the vocabulary, with the no_expand mask."""

    config_keys: list[str] = []

    def __init__(self, head: SparseHead | None = None) -> None:
        super().__init__()
        self.head = head if head is not None else SparseHead()

    def forward(self, features: dict[str, torch.Tensor | Any], **kwargs) -> dict[str, torch.Tensor | Any]:
        """Term weights of each input as `sentence_embedding` (a text's windows max-pooled)."""
        weights = self.head(features["dense_embedding"], input_ids=features.get("term_ids"),
                            attention_mask=features.get("term_mask"))
        owners = features.get("window_owner")
        if owners is not None and len(owners) and int(owners[-1]) + 1 != len(owners):
            pooled = torch.zeros(int(owners[-1]) + 1, weights.shape[1], dtype=weights.dtype, device=weights.device)
            index = owners.to(weights.device).view(-1, 1).expand_as(weights)
            weights = pooled.scatter_reduce_(0, index, weights, reduce="amax")  # weights >= 0: zeros start safely
        features["sentence_embedding"] = weights
        return features

    def get_embedding_dimension(self) -> int:
        """The vocabulary size: one dimension per term."""
        return self.head.vocab_size

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the head folder (`config.json`, `model.safetensors`), readable by `SparseHead.from_pretrained`."""
        self.head.save_pretrained(output_path)

    @classmethod
    def load(  # type: ignore[override]  # sentence-transformers' init_defaults is not used (it lands in **kwargs)
        cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs) -> D2SHead:
        """Read the head folder of a saved model (a local folder or a Hub repo's subfolder)."""
        folder = saved_module_folder(cls, "head", model_name_or_path, subfolder, token=token,
                                     cache_folder=cache_folder, revision=revision, local_files_only=local_files_only)
        return cls(SparseHead.from_pretrained(folder))


def saved_module_folder(module: type[Module], what: str, model_name_or_path: str, subfolder: str, **where) -> Path:
    """A saved model's folder of one module (local, or a Hub repo's subfolder fetched by sentence-transformers),
    or a ModelLoadError naming the `what` folder that is missing."""
    found = module.load_dir_path(model_name_or_path, subfolder=subfolder, **where)
    if found is None:  # sentence-transformers found no such folder, locally or on the Hub
        raise ModelLoadError(f"model {model_name_or_path!r} has no {what} folder {subfolder!r}.")
    return Path(found)
