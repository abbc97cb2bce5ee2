"""The input module: mlsr's frozen backbone (BLIP retrieval or CLIP) as a sentence-transformers `InputModule`.

Texts are checked, cleaned and cut into caption-sized windows exactly as `Encoder.encode_text` does; images are
loaded with mlsr's safe loader. `forward` gives each window's or image's unit dense vector (`dense_embedding`)
for `head.D2SHead`. `tokenizer` is the head's BERT-uncased term tokenizer, so `SparseEncoder.decode` names
terms; when a task's texts are encoded `no_expand`, `preprocess` adds each window's term ids (`term_ids`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Sequence

import torch
from sentence_transformers.base.modality import infer_batch_modality
from sentence_transformers.base.modules import InputModule

from mlsr.errors import InputError
from mlsr.images import load_image
from mlsr.models.backbone import Backbone, load_backbone, text_windows_of
from mlsr.models.st.head import saved_module_folder
from mlsr.models.tokenizer import load_tokenizer, locked
from mlsr.settings import ENCODE_MODES
from mlsr.text import MAX_TEXT_CHARS

if TYPE_CHECKING:
    from sentence_transformers.base.modality_types import Modality

CONFIG_FILE = "mlsr_input.json"
_BACKBONE_FOLDER = "backbone"  # the transformers model, its tokenizer and image processor
_TERMS_FOLDER = "terms"  # the head's term tokenizer (the BERT-uncased vocabulary)


class MlsrInput(InputModule):
    """Texts and images -> the backbone's dense vectors; carries the term tokenizer for masks and `decode`."""

    config_keys: list[str] = ["max_chars", "query_mode", "document_mode"]
    config_file_name = CONFIG_FILE
    save_in_root = False  # its own folder: the backbone's config.json must not be the model's root config

    def __init__(self, backbone: Backbone, term_tokenizer: object, max_chars: int = MAX_TEXT_CHARS,
                 query_mode: str = "expand", document_mode: str = "no_expand") -> None:
        super().__init__()
        for name, mode in (("query_mode", query_mode), ("document_mode", document_mode)):
            if mode not in ENCODE_MODES:
                raise InputError(f"{name} must be one of {ENCODE_MODES}, got {mode!r}.")
        self.backbone = backbone
        self.model = backbone.model  # registered, so that .to(device) and parameters() see the weights
        self.terms = locked(term_tokenizer)
        self.max_chars, self.query_mode, self.document_mode = int(max_chars), query_mode, document_mode

    @property
    def tokenizer(self) -> object:  # type: ignore[override]  # InputModule declares a settable attribute; ours is read-only
        """The head's term tokenizer: `SparseEncoder.decode` turns term ids into word pieces with it."""
        return self.terms.wrapped

    @property
    def modalities(self) -> list[Modality]:
        return ["text", "image"]

    @property
    def max_seq_length(self) -> int:
        """Word pieces per window (BLIP: 35); longer text is cut into windows, never truncated."""
        return self.backbone.max_text_tokens

    def text_mode(self, task: str | None) -> str:
        """How texts of `task` are encoded: `query_mode`, `document_mode`, or expand for no task."""
        modes: dict[str | None, str] = {"query": self.query_mode, "document": self.document_mode}
        return modes.get(task, "expand")

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, task: str | None = None,
                   **kwargs) -> dict[str, torch.Tensor | Any]:
        """A batch of texts (windows, their backbone tokens, owners, and term ids for no_expand) or of images."""
        if not inputs:
            return {}
        modality = infer_batch_modality(list(inputs), supported_modalities=self.modalities)
        if modality == "image":
            images = [load_image(item) for item in inputs]
            return {"pixel_values": self.backbone.image_pixels(images)}
        if modality != "text":
            raise InputError("a batch must hold only texts or only images (PIL images, or paths of image files).")
        texts = [prompt + text for text in inputs] if prompt else list(inputs)
        windows, raws, owners = text_windows_of(texts, self.backbone, self.max_chars)
        tokens = self.backbone.text_tokens(windows)
        features = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                    "window_owner": torch.from_numpy(owners)}
        if self.text_mode(task) == "no_expand":
            terms = self.terms(raws, add_special_tokens=False, padding=True, return_tensors="pt")
            features["term_ids"], features["term_mask"] = terms["input_ids"], terms["attention_mask"]
        return features

    def forward(self, features: dict[str, torch.Tensor | Any], **kwargs) -> dict[str, torch.Tensor | Any]:
        """Each window's or image's unit dense vector, as `dense_embedding`."""
        if "pixel_values" in features:
            features["dense_embedding"] = self.backbone.image_vectors(features["pixel_values"])
        else:
            features["dense_embedding"] = self.backbone.text_vectors(features["input_ids"], features["attention_mask"])
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """The backbone (model, tokenizer, image processor) and the term tokenizer in subfolders, and the modes."""
        folder = Path(output_path)
        self.backbone.model.save_pretrained(folder / _BACKBONE_FOLDER, safe_serialization=safe_serialization)
        self.backbone.tokenizer.save_pretrained(folder / _BACKBONE_FOLDER)
        self.backbone.image_processor.save_pretrained(folder / _BACKBONE_FOLDER)
        self.terms.save_pretrained(folder / _TERMS_FOLDER)
        self.save_config(output_path)

    @classmethod
    def load(  # type: ignore[override]  # sentence-transformers' init_defaults is not used (it lands in **kwargs)
        cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs) -> MlsrInput:
        """Read a saved input module with mlsr's own loaders (the backbone's kind from its config.json)."""
        folder = saved_module_folder(cls, "input module", model_name_or_path, subfolder, token=token,
                                     cache_folder=cache_folder, revision=revision, local_files_only=local_files_only)
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        backbone = load_backbone(str(folder / _BACKBONE_FOLDER))
        terms, _ = load_tokenizer(str(folder / _TERMS_FOLDER))
        return cls(backbone, terms, **{key: config[key] for key in cls.config_keys if key in config})
