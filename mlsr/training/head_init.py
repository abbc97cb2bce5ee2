"""A new head to train: random, or with its LayerNorm and vocabulary projector copied from a masked-LM."""

from __future__ import annotations

import json

import torch

from mlsr.errors import ModelLoadError
from mlsr.models.head import HeadConfig, SparseHead
from mlsr.models.hub import Source, resolve_with_weights
from mlsr.settings import DEFAULT_TOKENIZER

# The LayerNorm just before the vocabulary projection in the masked-LM heads we can start from.
_MLM_LAYER_NORMS = {"distilbert": "vocab_layer_norm", "bert": "cls.predictions.transform.LayerNorm"}


def new_head(dense_size: int, vocab_size: int, *, mlm: str | None = None, hidden_size: int = 768,
             mlm_head: str = DEFAULT_TOKENIZER, seed: int = 0) -> SparseHead:
    """A head for `dense_size` inputs; LayerNorm and vocabulary projector copied from a masked-LM when given.

    `mlm` is a Hub id or folder of a DistilBERT or BERT masked-LM (the paper used
    distilbert-base-uncased); without one every layer starts random. The dense -> hidden
    projection is always new. Initialisation is seeded and leaves the global RNG untouched.
    """
    if mlm is None:
        config = HeadConfig(dense_size=dense_size, hidden_size=hidden_size, vocab_size=vocab_size, mlm_head=mlm_head)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SparseHead(config)
    layer_norm, projector, name = _mlm_layers(mlm)
    if projector.out_features != vocab_size:
        raise ModelLoadError(
            f"masked-LM {mlm!r} scores {projector.out_features:,} terms but the tokenizer has {vocab_size:,};"
            " give the tokenizer of that model (tokenizer) or leave it out."
        )
    config = HeadConfig(dense_size=dense_size, hidden_size=projector.in_features, vocab_size=vocab_size,
                        mlm_head=name, layer_norm_eps=float(layer_norm.eps))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = SparseHead(config)
    with torch.no_grad():
        head.vocab_layer_norm.weight.copy_(layer_norm.weight)
        head.vocab_layer_norm.bias.copy_(layer_norm.bias)
        head.vocab_projector.weight.copy_(projector.weight)
        head.vocab_projector.bias.copy_(projector.bias if projector.bias is not None else torch.zeros(vocab_size))
    return head


def resolve_mlm(name_or_path: str) -> Source:
    """The local folder of a masked-LM (Hub id or folder); an error says how to train without one."""
    try:
        return resolve_with_weights(name_or_path, what="masked-LM")
    except ModelLoadError as error:
        raise ModelLoadError(f"{error} Or start the head from random weights (mlm=None).") from None


def _mlm_layers(name_or_path: str) -> tuple[torch.nn.LayerNorm, torch.nn.Linear, str]:
    """The LayerNorm and output projection of a DistilBERT/BERT masked-LM head."""
    from transformers import AutoModelForMaskedLM

    source = resolve_mlm(name_or_path)
    config_path = source.folder / "config.json"
    model_type = json.loads(config_path.read_text()).get("model_type") if config_path.is_file() else None
    if model_type not in _MLM_LAYER_NORMS:
        raise ModelLoadError(
            f"masked-LM {name_or_path!r} has model_type {model_type!r}; mlm takes a DistilBERT or BERT"
            " masked-LM (e.g. distilbert-base-uncased, bert-base-uncased)."
        )
    try:
        model = AutoModelForMaskedLM.from_pretrained(source.folder)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"masked-LM {name_or_path!r}: cannot load it ({error}).") from None
    return model.get_submodule(_MLM_LAYER_NORMS[model_type]), model.get_output_embeddings(), source.name
