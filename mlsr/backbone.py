"""The frozen dense image-text model whose 256-d embeddings the sparse head reads (BLIP retrieval)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from torch.nn.functional import normalize

from mlsr.errors import ModelLoadError
from mlsr.hub import Source, resolve

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "Salesforce/blip-itm-base-coco"
# BLIP's retrieval fine-tuning tokenised captions to 35 tokens; longer text is windowed (see text.py).
BLIP_MAX_TEXT_TOKENS = 35
_SMALL_FILES = ["*.json", "*.txt", "*.model"]


@dataclass
class Backbone:
    """A frozen dense model: texts and images -> L2-normalised vectors of `dense_size` dims."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    source: str
    revision: str | None
    max_text_tokens: int = BLIP_MAX_TEXT_TOKENS

    @property
    def dense_size(self) -> int:
        return self.model.text_proj.out_features

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def count_tokens(self, words: Sequence[str]) -> list[int]:
        """Number of word pieces of each word (without special tokens)."""
        if not words:
            return []
        return [len(ids) for ids in self.tokenizer(list(words), add_special_tokens=False)["input_ids"]]

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(n,) cleaned caption-sized texts -> (n, dense_size) unit vectors: normalize(text_proj(CLS))."""
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(self.device)
        hidden = self.model.text_encoder(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        return normalize(self.model.text_proj(hidden[:, 0, :]), dim=-1).float()

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n,) RGB images -> (n, dense_size) unit vectors: normalize(vision_proj(CLS))."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=next(self.model.parameters()).dtype)
        hidden = self.model.vision_model(pixel_values=pixels).last_hidden_state
        return normalize(self.model.vision_proj(hidden[:, 0, :]), dim=-1).float()

    def fingerprint(self) -> str:
        """Hash of the two projection layers: cheap, and it tells fine-tuned variants apart."""
        digest = hashlib.sha256()
        for layer in (self.model.text_proj, self.model.vision_proj):
            for tensor in (layer.weight, layer.bias):
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def load_backbone(
    name_or_path: str = DEFAULT_BACKBONE, *, device: str | torch.device = "cpu", revision: str | None = None
) -> Backbone:
    """Load a BLIP retrieval model (`BlipForImageTextRetrieval`) from a Hub id or a local folder."""
    from transformers import AutoTokenizer, BlipForImageTextRetrieval, BlipImageProcessorPil

    source = _resolve_with_weights(name_or_path, revision)
    config = json.loads((source.folder / "config.json").read_text()) if (source.folder / "config.json").is_file() else {}
    if config.get("model_type") != "blip":
        raise ModelLoadError(
            f"backbone {source.name!r} has model_type {config.get('model_type')!r}; expected a BLIP"
            " retrieval model (model_type 'blip', e.g. Salesforce/blip-itm-base-coco)."
        )
    try:
        model, info = BlipForImageTextRetrieval.from_pretrained(source.folder, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(source.folder)
        # The PIL processor gives the same pixels as BLIP's and needs no torchvision.
        image_processor = BlipImageProcessorPil.from_pretrained(source.folder)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"backbone {source.name!r}: cannot load it ({error}).") from None
    missing = [key for key in info.get("missing_keys", ()) if key.split(".")[0] in ("text_proj", "vision_proj")]
    if missing:
        raise ModelLoadError(
            f"backbone {source.name!r} has no trained retrieval projections ({missing}): it is not an"
            " image-text retrieval checkpoint. Use e.g. Salesforce/blip-itm-base-coco."
        )
    model.eval().requires_grad_(False).to(device)
    return Backbone(model, tokenizer, image_processor, source.name, source.revision)


def _resolve_with_weights(name_or_path: str, revision: str | None) -> Source:
    """Resolve a folder holding config, tokenizer and weights: safetensors, or a .bin when that is all."""
    source = resolve(name_or_path, [*_SMALL_FILES, "*.safetensors"], revision=revision, what="backbone")
    if any(source.folder.glob("*.safetensors")) or any(source.folder.glob("*.bin")):
        return source
    if source.revision is None:
        raise ModelLoadError(f"backbone folder {source.folder} holds no weights (*.safetensors or *.bin).")
    return resolve(name_or_path, [*_SMALL_FILES, "*.bin"], revision=revision, what="backbone")
