"""The D2S head against independent values: the published checkpoints' configuration pinned as literals, the
formula written out by hand on a 2 -> 2 -> 3 head, masks by hand, the exact files it saves, each reason a folder is
refused, and configuration fields that are present, absent or different in config.json."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mlsr.errors import ModelLoadError
from mlsr.models.head import HeadConfig, SparseHead, token_mask


def test_defaults_are_the_published_checkpoints_configuration():
    # lsr42/d2s_*: config.json says dense_size 256 and mlm_head distilbert-base-uncased; DistilBERT's vocabulary
    # layers are 768 wide over 30,522 BERT-uncased terms, with LayerNorm eps 1e-12 (its config.json).
    assert HeadConfig() == HeadConfig(dense_size=256, hidden_size=768, vocab_size=30522,
                                      mlm_head="distilbert-base-uncased", layer_norm_eps=1e-12)
    head = SparseHead()
    assert head.vocab_layer_norm.eps == 1e-12 and head.vocab_size == 30522
    assert tuple(head.proj.weight.shape) == (768, 256) and tuple(head.vocab_projector.weight.shape) == (30522, 768)


def tiny_head(eps: float = 0.25) -> SparseHead:
    """A 2 -> 2 -> 3 head with hand-picked weights."""
    head = SparseHead(HeadConfig(dense_size=2, hidden_size=2, vocab_size=3, layer_norm_eps=eps))
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        head.proj.bias.copy_(torch.tensor([0.0, 1.0]))
        head.vocab_layer_norm.weight.copy_(torch.tensor([2.0, 1.0]))
        head.vocab_layer_norm.bias.copy_(torch.tensor([0.0, 0.5]))
        head.vocab_projector.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        head.vocab_projector.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
    return head


def test_forward_by_hand_on_a_tiny_head():
    # x = (1, 1): proj -> (1, 4); mean 2.5, variance 2.25; eps 0.25 -> sd sqrt(2.5)
    sd = math.sqrt(2.25 + 0.25)
    normed = [(1 - 2.5) / sd * 2.0, (4 - 2.5) / sd * 1.0 + 0.5]
    logits = [normed[0], normed[1], -normed[0] - normed[1]]
    expected = [math.log1p(max(value, 0.0)) for value in logits]
    with torch.no_grad():
        out = tiny_head()(torch.tensor([[1.0, 1.0]]))
    assert out.shape == (1, 3)
    assert out[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert out[0, 0] == 0 and out[0, 1] > 0 and out[0, 2] > 0  # the ReLU cut one term


def test_forward_masks_to_the_attended_ids_only():
    with torch.no_grad():
        head = tiny_head()
        dense = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
        full = head(dense)
        masked = head(dense, input_ids=torch.tensor([[1, 2], [2, 1]]), attention_mask=torch.tensor([[1, 0], [1, 1]]))
    assert masked.tolist() == [[0.0, full[0, 1].item(), 0.0], [0.0, full[1, 1].item(), full[1, 2].item()]]


@pytest.mark.parametrize("attention, expected", [
    (None, [[0, 1, 0, 1, 0], [0, 1, 1, 0, 0]]),
    ([[1, 1, 0], [1, 1, 0]], [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]]),
    ([[0, 0, 0], [1, 1, 1]], [[0, 0, 0, 0, 0], [0, 1, 1, 0, 0]]),
])
def test_token_mask_by_hand(attention, expected):
    ids = torch.tensor([[1, 3, 3], [2, 2, 1]]) if attention is None else torch.tensor([[1, 3, 0], [2, 2, 1]])
    mask = token_mask(ids, None if attention is None else torch.tensor(attention), 5)
    assert mask.dtype == torch.float32 and mask.tolist() == expected


def test_token_mask_caps_a_weighted_attention_at_one():
    mask = token_mask(torch.tensor([[4, 1]]), torch.tensor([[3, 1]]), 5)
    assert mask.tolist() == [[0, 1, 0, 0, 1]]


def test_saved_files_are_the_reference_layout(tmp_path):
    head = tiny_head(eps=1e-5)
    head.save_pretrained(tmp_path / "new" / "nested")
    config = json.loads((tmp_path / "new" / "nested" / "config.json").read_text())
    assert config == {"model_type": "d2s", "architectures": ["D2SModel"], "dense_size": 2, "hidden_size": 2,
                      "vocab_size": 3, "mlm_head": "distilbert-base-uncased", "layer_norm_eps": 1e-5}
    with safe_open(str(tmp_path / "new" / "nested" / "model.safetensors"), "pt") as weights:
        assert weights.metadata() == {"format": "pt"}
        assert sorted(weights.keys()) == sorted(head.state_dict())
    loaded = SparseHead.from_pretrained(tmp_path / "new" / "nested")
    assert loaded.config == head.config and loaded.vocab_layer_norm.eps == 1e-5 and not loaded.training
    assert sorted(p.name for p in (tmp_path / "new" / "nested").iterdir()) == ["config.json", "model.safetensors"]


def write_folder(folder, config: dict, state: dict | None = None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if state is not None:
        save_file(state, str(folder / "model.safetensors"))
    return folder


def tiny_state():
    return {name: tensor.clone() for name, tensor in tiny_head().state_dict().items()}


def test_config_fields_absent_from_config_json_take_the_defaults(tmp_path):
    folder = write_folder(tmp_path / "ref", {"model_type": "d2s"}, tiny_state())
    loaded = SparseHead.from_pretrained(folder)
    assert loaded.config == HeadConfig(dense_size=2, hidden_size=2, vocab_size=3)
    assert loaded.vocab_layer_norm.eps == 1e-12


def test_config_fields_present_in_config_json_are_used(tmp_path):
    config = {"model_type": "d2s", "dense_size": 2, "mlm_head": "bert-base-uncased", "layer_norm_eps": 0.25}
    loaded = SparseHead.from_pretrained(write_folder(tmp_path / "h", config, tiny_state()))
    assert loaded.config.mlm_head == "bert-base-uncased" and loaded.config.layer_norm_eps == 0.25
    with torch.no_grad():
        assert torch.equal(loaded(torch.tensor([[1.0, 1.0]])), tiny_head()(torch.tensor([[1.0, 1.0]])))


def test_weights_in_another_dtype_load_as_float32(tmp_path):
    state = {name: tensor.to(torch.float16) for name, tensor in tiny_state().items()}
    loaded = SparseHead.from_pretrained(write_folder(tmp_path / "h", {"model_type": "d2s"}, state))
    assert all(tensor.dtype == torch.float32 for tensor in loaded.state_dict().values())


@pytest.mark.parametrize("config, state, message", [
    (None, None, "sparse head {name!r} has no config.json in {folder}."),
    ({"model_type": "bert"}, None,
     "{name!r} is not a D2S sparse head: its config says model_type='bert', expected 'd2s'."),
    ({}, None, "{name!r} is not a D2S sparse head: its config says model_type=None, expected 'd2s'."),
    ({"model_type": "d2s"}, "missing",
     "sparse head {name!r} lacks the weights ['vocab_projector.bias']; found ['proj.bias', 'proj.weight',"
     " 'vocab_layer_norm.bias', 'vocab_layer_norm.weight', 'vocab_projector.weight']."),
    ({"model_type": "d2s", "dense_size": 5}, "tiny",
     "sparse head {name!r}: weight shapes disagree with each other or with config.json (dense_size 5 vs proj (2, 2),"
     " vocab_projector (3, 2))."),
    ({"model_type": "d2s"}, "projector",
     "sparse head {name!r}: weight shapes disagree with each other or with config.json (dense_size 2 vs proj (2, 2),"
     " vocab_projector (3, 4))."),
])
def test_each_bad_folder_is_refused_with_its_reason(tmp_path, config, state, message):
    folder = tmp_path / "head"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    weights = tiny_state()
    if state == "missing":
        del weights["vocab_projector.bias"]
    elif state == "projector":
        weights["vocab_projector.weight"] = torch.zeros(3, 4)
    if state is not None:
        save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError) as caught:
        SparseHead.from_pretrained(folder)
    assert str(caught.value) == message.format(name=str(folder), folder=folder)


class Planted:
    """Any class: unpickling it would run code of the file's choosing."""


def test_a_legacy_bin_with_a_pickled_object_is_refused(tmp_path):
    folder = write_folder(tmp_path / "h", {"model_type": "d2s"})
    torch.save({**tiny_state(), "planted": Planted()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"cannot read its weights"):
        SparseHead.from_pretrained(folder)


def test_fingerprint_is_a_hash_of_the_sorted_float32_weights(tmp_path):
    head = tiny_head()
    digest = hashlib.sha256()
    for name in sorted(head.state_dict()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(head.state_dict()[name].numpy(), dtype=np.float32).tobytes())
    assert head.fingerprint() == digest.hexdigest()[:16] == head.fingerprint()
    with torch.no_grad():
        head.proj.bias[0] += 1.0
    assert head.fingerprint() != digest.hexdigest()[:16]


def test_a_file_given_as_a_head_is_refused_naming_a_sparse_head(tmp_path):
    (tmp_path / "head.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError) as caught:
        SparseHead.from_pretrained(tmp_path / "head.bin")
    assert str(caught.value).startswith(f"sparse head {str(tmp_path / 'head.bin')!r} is a file")


def test_many_weights_but_a_missing_one_lists_the_first_ten_found(tmp_path):
    state = {**tiny_state(), **{f"extra.{i:02d}": torch.zeros(1) for i in range(12)}}
    del state["proj.bias"]
    folder = write_folder(tmp_path / "h", {"model_type": "d2s"}, state)
    with pytest.raises(ModelLoadError) as caught:
        SparseHead.from_pretrained(folder)
    found = [f"extra.{i:02d}" for i in range(10)]
    assert str(caught.value) == f"sparse head {str(folder)!r} lacks the weights ['proj.bias']; found {found}."


def test_saving_twice_into_the_same_folder_replaces_the_files(tmp_path):
    head = tiny_head()
    head.save_pretrained(tmp_path / "h")
    with torch.no_grad():
        head.proj.bias[0] = 7.0
    head.save_pretrained(tmp_path / "h")
    assert SparseHead.from_pretrained(tmp_path / "h").proj.bias[0].item() == 7.0


def test_a_new_head_has_no_source_yet():
    head = SparseHead(HeadConfig(dense_size=2, hidden_size=2, vocab_size=3))
    assert head.source is None and head.revision is None


def test_the_fingerprint_is_computed_once_until_a_weight_changes(monkeypatch):
    import mlsr.models.head as module

    head = tiny_head()
    first = head.fingerprint()
    monkeypatch.setattr(module.hashlib, "sha256", lambda: pytest.fail("hashed again without a change"))
    assert head.fingerprint() == first
    monkeypatch.undo()
    with torch.no_grad():
        head.proj.bias[1] -= 1.0
    assert head.fingerprint() != first


def test_a_bfloat16_head_hashes_its_float32_values_and_keeps_its_dtype_when_masking():
    head = tiny_head().to(torch.bfloat16)
    digest = hashlib.sha256()
    for name in sorted(head.state_dict()):
        digest.update(name.encode())
        digest.update(head.state_dict()[name].float().numpy().tobytes())
    assert head.fingerprint() == digest.hexdigest()[:16]
    with torch.no_grad():
        out = head(torch.ones(1, 2, dtype=torch.bfloat16), input_ids=torch.tensor([[1]]))
    assert out.dtype == torch.bfloat16 and out[0, 0] == out[0, 2] == 0 and out[0, 1] > 0


def test_a_hub_revision_loads_that_commit_not_main(tmp_path, monkeypatch):
    """Two commits of one head repo in an offline Hugging Face cache, main at the second: asking for the first
    loads the first's weights and records its commit (a dropped `revision` would load main's)."""
    from tests.helpers.hub import add_snapshot, offline_hub

    cache = offline_hub(monkeypatch, tmp_path / "cache")
    first, second = "a" * 40, "b" * 40
    for commit, eps, refs in ((first, 0.25, ()), (second, 0.5, ("main",))):
        tiny_head(eps).save_pretrained(tmp_path / commit)
        add_snapshot(cache, "lsr42/tiny-head", tmp_path / commit, commit, refs=refs, repo_type="model")
    pinned = SparseHead.from_pretrained("lsr42/tiny-head", revision=first)
    latest = SparseHead.from_pretrained("lsr42/tiny-head")
    assert (pinned.revision, pinned.config.layer_norm_eps) == (first, 0.25)
    assert (latest.revision, latest.config.layer_norm_eps) == (second, 0.5)
