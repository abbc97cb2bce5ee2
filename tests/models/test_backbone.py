"""Backbones: BLIP and CLIP load by model_type, give unit vectors, and batch equals one by one."""

import json

import numpy as np
import pytest
import torch

from tests.helpers.data import CAPTIONS, make_image
from tests.helpers.models import CLIP_DENSE_SIZE, DENSE_SIZE
from mlsr.models.backbone import load_backbone
from mlsr.models.encoder import Encoder
from mlsr.errors import ModelLoadError
from mlsr.models.head import HeadConfig, SparseHead


@pytest.fixture(scope="module")
def clip(clip_backbone_dir):
    return load_backbone(str(clip_backbone_dir))


def test_clip_backbone_loads_by_model_type(clip, backbone_dir):
    assert clip.model_type == "clip" and clip.dense_size == CLIP_DENSE_SIZE and clip.max_text_tokens == 77
    blip = load_backbone(str(backbone_dir))
    assert blip.model_type == "blip" and blip.dense_size == DENSE_SIZE and blip.max_text_tokens == 35
    assert len(clip.fingerprint()) == 16 and clip.fingerprint() != blip.fingerprint()


def test_clip_vectors_are_its_projected_features_normalised(clip):
    """Cross-check against CLIPModel's own get_text_features / get_image_features."""
    images = [make_image(seed) for seed in range(3)]
    dense_images = clip.embed_images(images)
    dense_texts = clip.embed_texts(CAPTIONS[:3])
    assert dense_images.shape == (3, CLIP_DENSE_SIZE) and dense_texts.shape == (3, CLIP_DENSE_SIZE)
    np.testing.assert_allclose(dense_texts.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    with torch.no_grad():
        tokens = clip.tokenizer(CAPTIONS[:3], padding=True, return_tensors="pt")
        text_features = clip.model.get_text_features(**tokens).pooler_output
        pixels = clip.image_processor(images=images, return_tensors="pt")["pixel_values"]
        image_features = clip.model.get_image_features(pixel_values=pixels).pooler_output
    np.testing.assert_allclose(dense_texts.numpy(), torch.nn.functional.normalize(text_features).numpy(), atol=1e-5)
    np.testing.assert_allclose(dense_images.numpy(), torch.nn.functional.normalize(image_features).numpy(), atol=1e-5)


def test_blip_vectors_are_its_projected_cls_normalised(encoder):
    """Cross-check the encoder's BLIP vectors against the model's own modules and its use_itm_head=False cosine."""
    from torch.nn.functional import normalize

    blip = encoder.backbone
    images = [make_image(seed) for seed in range(5)]
    dense_texts, dense_images = encoder.encode_text_views(CAPTIONS).dense, encoder.encode_images_with_dense(images)[1]
    assert dense_texts.shape == (len(CAPTIONS), DENSE_SIZE) and dense_images.shape == (5, DENSE_SIZE)
    model = blip.model
    with torch.no_grad():
        tokens = blip.tokenizer(CAPTIONS, padding=True, truncation=True, max_length=35, return_tensors="pt")
        assert (tokens["attention_mask"] == 0).any()  # a padded batch: padding must not reach [CLS]
        cls = model.text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])[0][:, 0]
        texts = normalize(model.text_proj(cls), dim=-1)
        pixels = blip.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pictures = normalize(model.vision_proj(model.vision_model(pixel_values=pixels)[0][:, 0]), dim=-1)
        cosine = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels,
                       use_itm_head=False).itm_score  # (images, captions)
    np.testing.assert_allclose(dense_texts, texts.numpy(), atol=1e-5)
    np.testing.assert_allclose(dense_images, pictures.numpy(), atol=1e-5)
    assert cosine.shape == (5, len(CAPTIONS))
    np.testing.assert_allclose(dense_images @ dense_texts.T, cosine.numpy(), atol=1e-5)


def test_clip_batch_equals_one_by_one(clip):
    """Padding must not leak into the pooled vector (CLIP pools at the end-of-text token)."""
    batch = clip.embed_texts(CAPTIONS)
    for i, caption in enumerate(CAPTIONS):
        np.testing.assert_allclose(batch[i].numpy(), clip.embed_texts([caption])[0].numpy(), atol=1e-5)


def test_encoder_with_a_clip_backbone_and_a_matching_head(clip_backbone_dir, head_dir, tokenizer_dir, tmp_path):
    clip_head_dir = tmp_path / "clip-head"
    torch.manual_seed(1)
    SparseHead(HeadConfig(dense_size=CLIP_DENSE_SIZE, hidden_size=32, vocab_size=30522)).save_pretrained(clip_head_dir)
    encoder = Encoder.from_pretrained(str(clip_backbone_dir), str(clip_head_dir), str(tokenizer_dir), device="cpu")
    vectors = encoder.encode_text(["a red bus on a street"], mode="no_expand")
    assert vectors.shape == (1, 30522) and vectors.nnz > 0
    assert encoder.encode_images([make_image(0)]).shape == (1, 30522)
    assert encoder.models().backbone.fingerprint == load_backbone(str(clip_backbone_dir)).fingerprint()
    with pytest.raises(ModelLoadError, match="48-d vectors"):  # the 256-d BLIP head on a CLIP backbone
        Encoder.from_pretrained(str(clip_backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu")


def test_unknown_model_type_is_refused(clip_backbone_dir, tmp_path):
    import shutil

    folder = tmp_path / "other"
    shutil.copytree(clip_backbone_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "siglip"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="model_type 'siglip'.*CLIP"):
        load_backbone(str(folder))
