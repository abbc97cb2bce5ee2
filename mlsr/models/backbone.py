"""The frozen dense image-text model whose embeddings the sparse head reads: BLIP retrieval or CLIP."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from PIL import Image
from torch.nn.functional import normalize

from mlsr.errors import ModelLoadError
from mlsr.models.hub import resolve_with_weights
from mlsr.models.tokenizer import LockedTokenizer, locked
from mlsr.settings import DEFAULT_BACKBONE
from mlsr.text import MAX_TEXT_CHARS, check_text, text_windows

if TYPE_CHECKING:
    from transformers import BlipForImageTextRetrieval, CLIPModel, PreTrainedModel

logger = logging.getLogger(__name__)

# BLIP's retrieval fine-tuning tokenised captions to 35 tokens; longer text is windowed (see text.py).
_BLIP_MAX_TEXT_TOKENS = 35
# The (text, image) projection layers of each supported model type: they make the dense vectors.
_PROJECTIONS = {"blip": ("text_proj", "vision_proj"), "clip": ("text_projection", "visual_projection")}


@dataclass
class Backbone:
    """A frozen dense model: texts and images -> L2-normalised vectors of `dense_size` dims.

    `model_type` is "blip" (`BlipForImageTextRetrieval`: normalize(proj(CLS))) or "clip"
    (`CLIPModel`: normalize(projection(pooled output)), the vectors of `get_text/image_features`).
    """

    model: PreTrainedModel  # BlipForImageTextRetrieval or CLIPModel, by model_type
    tokenizer: LockedTokenizer
    image_processor: Any  # a transformers PIL image processor (called on lists of images)
    source: str
    revision: str | None
    max_text_tokens: int = _BLIP_MAX_TEXT_TOKENS
    model_type: str = "blip"

    @property
    def dense_size(self) -> int:
        return self._projections()[0].out_features

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
        """(n,) cleaned caption-sized texts -> (n, dense_size) unit vectors (longer text is truncated)."""
        tokens = self.text_tokens(texts).to(self.device)
        return self.text_vectors(tokens["input_ids"], tokens["attention_mask"])

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n,) RGB images -> (n, dense_size) unit vectors."""
        return self.image_vectors(self.image_pixels(images).to(self.device))

    def text_tokens(self, texts: Sequence[str]):
        """The backbone's token ids and attention mask of caption-sized texts, truncated to `max_text_tokens`."""
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_tokens,
                              return_tensors="pt")

    def image_pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The backbone's pixel values of RGB images, (n, 3, side, side) float32 on the CPU."""
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def text_vectors(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids and attention mask (on the model's device) -> (n, dense_size) float32 unit vectors."""
        if self.model_type == "clip":
            # CLIP pools the hidden state at the end-of-text token (pooler_output), then projects.
            clip = self._clip()
            pooled = clip.text_model(input_ids=ids, attention_mask=mask).pooler_output
            return normalize(clip.text_projection(pooled), dim=-1).float()
        blip = self._blip()
        hidden = blip.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return normalize(blip.text_proj(hidden[:, 0, :]), dim=-1).float()

    def image_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel values (on the model's device) -> (n, dense_size) float32 unit vectors."""
        pixels = pixels.to(dtype=next(self.model.parameters()).dtype)
        if self.model_type == "clip":
            clip = self._clip()
            pooled = clip.vision_model(pixel_values=pixels).pooler_output
            return normalize(clip.visual_projection(pooled), dim=-1).float()
        blip = self._blip()
        hidden = blip.vision_model(pixel_values=pixels).last_hidden_state
        return normalize(blip.vision_proj(hidden[:, 0, :]), dim=-1).float()

    def fingerprint(self) -> str:
        """Hash of the two projection layers: cheap, and it tells fine-tuned variants apart."""
        digest = hashlib.sha256()
        for layer in self._projections():
            for tensor in (layer.weight, layer.bias):
                if tensor is not None:  # CLIP's projections have no bias
                    digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _clip(self) -> CLIPModel:
        # model_type "clip" is set only by load_backbone, with a CLIPModel (int8_text_backbone keeps its class).
        return cast("CLIPModel", self.model)

    def _blip(self) -> BlipForImageTextRetrieval:
        # Any other model_type is "blip", set by load_backbone with a BlipForImageTextRetrieval.
        return cast("BlipForImageTextRetrieval", self.model)

    def _projections(self) -> tuple[torch.nn.Linear, torch.nn.Linear]:
        text, image = _PROJECTIONS[self.model_type]
        return getattr(self.model, text), getattr(self.model, image)


def load_backbone(
    name_or_path: str = DEFAULT_BACKBONE, *, device: str | torch.device = "cpu", revision: str | None = None
) -> Backbone:
    """Load a BLIP retrieval model or a CLIP model from a Hub id or a local folder.

    The kind is read from `config.json` (`model_type` "blip" or "clip"); both give unit vectors
    from the model's own image-text projections.
    """
    source = resolve_with_weights(name_or_path, revision=revision, what="backbone")
    config_path = source.folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    model_type = config.get("model_type")
    if model_type not in _PROJECTIONS:
        raise ModelLoadError(
            f"backbone {source.name!r} has model_type {model_type!r}; expected a BLIP retrieval model"
            " (model_type 'blip', e.g. Salesforce/blip-itm-base-coco) or a CLIP model (model_type 'clip',"
            " e.g. openai/clip-vit-base-patch32)."
        )
    try:
        model, info, tokenizer, image_processor = _load_parts(model_type, source.folder)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"backbone {source.name!r}: cannot load it ({error}).") from None
    missing = [key for key in info.get("missing_keys", ()) if key.split(".")[0] in _PROJECTIONS[model_type]]
    if missing:
        raise ModelLoadError(
            f"backbone {source.name!r} has no trained image-text projections ({missing}): it is not an"
            " image-text retrieval checkpoint. Use e.g. Salesforce/blip-itm-base-coco or openai/clip-vit-base-patch32."
        )
    model.eval().requires_grad_(False).to(device)
    if model_type == "clip":
        # CLIP's text encoder has 77 positions (its training length); BLIP was fine-tuned on 35 tokens.
        max_tokens = int(model.config.text_config.max_position_embeddings)
        return Backbone(model, tokenizer, image_processor, source.name, source.revision, max_tokens, "clip")
    return Backbone(model, tokenizer, image_processor, source.name, source.revision)


def _load_parts(model_type: str, folder: Path) -> tuple[PreTrainedModel, dict, LockedTokenizer, Any]:
    """Model (with its loading info), tokenizer and PIL image processor of one backbone folder.

    The PIL image processors give the same pixels as the default ones and need no torchvision.
    """
    from transformers import AutoTokenizer

    if model_type == "clip":
        from transformers import CLIPImageProcessorPil, CLIPModel

        # output_loading_info=True returns (model, info); transformers annotates the return as the model alone.
        model, info = cast("tuple[PreTrainedModel, dict]", CLIPModel.from_pretrained(folder, output_loading_info=True))
        image_processor: Any = CLIPImageProcessorPil.from_pretrained(folder)
    else:
        from transformers import BlipForImageTextRetrieval, BlipImageProcessorPil

        loaded = BlipForImageTextRetrieval.from_pretrained(folder, output_loading_info=True)
        model, info = cast("tuple[PreTrainedModel, dict]", loaded)  # (model, info), as above
        image_processor = BlipImageProcessorPil.from_pretrained(folder)
    return model, info, locked(AutoTokenizer.from_pretrained(folder)), image_processor


def text_windows_of(texts: Sequence[str], backbone: Backbone, max_chars: int = MAX_TEXT_CHARS
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """All windows of all texts: their cleaned texts (for the backbone), their raw spans (for the no_expand
    masks), and for each window the index of the text it came from. Each text is checked first."""
    windows: list[str] = []
    raws: list[str] = []
    owners: list[int] = []
    for i, text in enumerate(texts):
        check_text(text, max_chars)
        parts = text_windows(text, backbone.count_tokens, backbone.max_text_tokens - 2)
        windows.extend(part.text for part in parts)
        raws.extend(part.raw for part in parts)
        owners.extend([i] * len(parts))
    return windows, raws, np.asarray(owners, dtype=np.int64)
