"""The D2S head: formula, masking, the reference checkpoint layout, save/load."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.models import DENSE_SIZE, VOCAB_SIZE, make_head
from mlsr.errors import ModelLoadError
from mlsr.models.head import SparseHead, token_mask


def reference_formula(head: SparseHead, dense: np.ndarray) -> np.ndarray:
    """log1p(relu(W2 LN(W1 x + b1) + b2)) written out in numpy, independent of torch modules."""
    state = {k: v.detach().numpy().astype(np.float64) for k, v in head.state_dict().items()}
    h = dense.astype(np.float64) @ state["proj.weight"].T + state["proj.bias"]
    mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mean) / np.sqrt(var + 1e-12) * state["vocab_layer_norm.weight"] + state["vocab_layer_norm.bias"]
    logits = h @ state["vocab_projector.weight"].T + state["vocab_projector.bias"]
    return np.log1p(np.maximum(logits, 0))


def test_head_output_equals_the_formula():
    head = make_head()
    with torch.no_grad():
        head.vocab_layer_norm.weight.uniform_(0.5, 1.5)  # make LayerNorm's affine part matter
        head.vocab_layer_norm.bias.uniform_(-0.1, 0.1)
    dense = np.random.default_rng(1).normal(size=(3, DENSE_SIZE)).astype(np.float32)
    with torch.no_grad():
        out = head(torch.from_numpy(dense)).numpy()
    assert out.shape == (3, VOCAB_SIZE)
    np.testing.assert_allclose(out, reference_formula(head, dense), rtol=1e-4, atol=1e-5)
    assert (out > 0).any() and (out == 0).any()


def test_masking_zeroes_every_term_not_in_the_ids():
    head = make_head()
    with torch.no_grad():
        head.vocab_projector.bias.zero_()  # about half the vocabulary active before masking
    dense = torch.randn(2, DENSE_SIZE)
    ids = torch.tensor([[2000, 2001, 2002, 0], [3000, 3000, 3001, 3002]])
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        full = head(dense)
        masked = head(dense, input_ids=ids, attention_mask=attention)
    allowed = [{2000, 2001, 2002}, {3000, 3001, 3002}]
    for row in range(2):
        nonzero = set(torch.nonzero(masked[row]).flatten().tolist())
        assert nonzero <= allowed[row]
        for term in allowed[row]:  # allowed terms keep their full weight
            assert masked[row, term] == full[row, term]
    assert masked[0, 0] == 0  # a padded position does not unmask its id


def test_token_mask_without_attention_mask_marks_all_ids_once():
    mask = token_mask(torch.tensor([[5, 5, 7]]), None, 10)
    assert mask.tolist() == [[0, 0, 0, 0, 0, 1, 0, 1, 0, 0]]


def write_reference_checkpoint(folder, head: SparseHead, legacy: bool = False):
    """A folder as the reference D2SModel.save_pretrained wrote it: no vocab_size or hidden_size in config."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["D2SModel"], "dense_size": DENSE_SIZE, "mlm_head": "distilbert-base-uncased",
              "model_type": "d2s", "torch_dtype": "float32", "transformers_version": "4.36.2"}
    (folder / "config.json").write_text(json.dumps(config))
    state = {k: v.clone() for k, v in head.state_dict().items()}
    if legacy:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("legacy", [False, True], ids=["safetensors", "pytorch_model.bin"])
def test_reference_checkpoint_folder_loads(tmp_path, legacy):
    head = make_head(hidden_size=768, seed=3)  # the real sizes: 256 -> 768 -> 30,522
    write_reference_checkpoint(tmp_path / "ref", head, legacy=legacy)
    loaded = SparseHead.from_pretrained(tmp_path / "ref")
    assert (loaded.config.dense_size, loaded.config.hidden_size, loaded.config.vocab_size) == (256, 768, 30522)
    dense = torch.randn(2, DENSE_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(dense), head(dense))
    assert loaded.revision is None and loaded.source == str(tmp_path / "ref")


def test_save_then_load_gives_the_changed_weights(tmp_path):
    head = make_head()
    with torch.no_grad():
        head.proj.weight.mul_(3.0).add_(0.01)
    head.save_pretrained(tmp_path / "saved")
    loaded = SparseHead.from_pretrained(str(tmp_path / "saved"))
    for name, tensor in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.fingerprint() == head.fingerprint() != make_head().fingerprint()
    assert not list(tmp_path.glob("saved/.*.tmp"))  # no temp files left behind


def test_fingerprint_changes_with_any_weight():
    head = make_head()
    before = head.fingerprint()
    with torch.no_grad():
        head.vocab_projector.bias[123] += 1e-3
    assert head.fingerprint() != before


def test_bad_head_folders_are_refused_with_a_reason(tmp_path):
    with pytest.raises(ModelLoadError, match="not a D2S"):
        (tmp_path / "bert").mkdir()
        (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        SparseHead.from_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="neither model.safetensors nor pytorch_model.bin"):
        (tmp_path / "noweights").mkdir()
        (tmp_path / "noweights" / "config.json").write_text(json.dumps({"model_type": "d2s"}))
        SparseHead.from_pretrained(tmp_path / "noweights")
    write_reference_checkpoint(tmp_path / "broken", make_head())
    data = (tmp_path / "broken" / "model.safetensors").read_bytes()
    (tmp_path / "broken" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cannot read its weights"):
        SparseHead.from_pretrained(tmp_path / "broken")
    write_reference_checkpoint(tmp_path / "wrongsize", make_head())
    (tmp_path / "wrongsize" / "config.json").write_text(json.dumps({"model_type": "d2s", "dense_size": 512}))
    with pytest.raises(ModelLoadError, match="shapes disagree"):
        SparseHead.from_pretrained(tmp_path / "wrongsize")
    with pytest.raises(ModelLoadError, match="not a valid Hub repo id|could not be reached"):
        SparseHead.from_pretrained(tmp_path / "does-not-exist")
