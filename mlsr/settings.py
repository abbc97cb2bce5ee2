"""Names and defaults shared by the library, the command line and the app, each defined once.

Plain constants (no torch), so the command line can build its parser without loading a model.
Vocabulary of names: `k` is the number of result rows, `top_k` the number of terms shown.
"""

from __future__ import annotations

from typing import Literal
from collections.abc import Callable

# -- models and data (each a Hugging Face Hub id, or a local folder in its place) ------------------------
DEFAULT_BACKBONE = "Salesforce/blip-itm-base-coco"
DEFAULT_HEAD = "lsr42/d2s_mscoco-blip-dense_q_reg_0.001_d_reg_0.001"
DEFAULT_TOKENIZER = "distilbert-base-uncased"
DEFAULT_DATASET = "lsr42/mscoco-blip-dense"
DEFAULT_SPLIT = "test"
DEFAULT_INDEX = "index/mscoco-test"  # the app's gallery: the 5k COCO test images, built from DEFAULT_DATASET
SPLITS: tuple[str, ...] = ("train", "val", "test", "restval")  # the Karpathy split names of COCO / Flickr30k

# -- how text is encoded, and how documents are made -----------------------------------------------------
EncodeMode = Literal["expand", "no_expand"]
ENCODE_MODES: tuple[str, ...] = ("expand", "no_expand")  # expand: any term; no_expand: only the text's own tokens
QueryMode = Literal["expand", "no_expand", "hybrid"]
QUERY_MODES: tuple[str, ...] = ("expand", "no_expand", "hybrid")  # hybrid: no_expand candidates, expanded scores
HYBRID_DEPTH = 1000  # no_expand candidates that hybrid re-scores
REFERENCE_HYBRID_DEPTH = 10  # ... in the reference code (thongnt99/lsr-multimodal retrieve.py, --topk)
PRECISIONS: tuple[str, ...] = ("uint8", "float16", "float32")  # how an index stores document weights
Documents = Literal["image", "caption", "image+caption"]
DOCUMENTS: tuple[str, ...] = ("image", "caption", "image+caption")  # the seed paper's three document runs

# -- limits at the boundary --------------------------------------------------------------------------------
MAX_K = 100  # result rows one request of the app may ask for
ENCODE_BATCH = 32  # images or text windows per backbone pass (library, CLI, evaluation)
SERVICE_ENCODE_BATCH = 16  # ... in the app's service: one request's windows, with a smaller peak memory on a Space
HEAD_BATCH = 1024  # precomputed dense vectors per pass of the sparse head alone (Encoder.head_only, sparsify)
MAX_TOP_K = 200  # terms one request of the app may ask for

# -- article mode: a whole article in, images for each of its sections out -------------------------------
ARTICLE_K = 3  # images suggested per section by default
MAX_SECTION_K = 10  # images per section one request may ask for
MAX_SECTIONS = 50  # sections one article may have (merge some, or split the article, beyond that)
NEAR_DUPLICATE_COSINE = 0.95  # two images whose sparse vectors are closer than this count as one image
# below this best score a section gets "no good match" instead of a picture; 0 (off) until bench/bench_min_score.py
# is run with the real models on AToMiC (docs/commons.md says how); the control is visible, starting at 0
DEFAULT_MIN_SCORE = 0.0

# -- callbacks ---------------------------------------------------------------------------------------------
Progress = Callable[[int], None]  # called with the number of items just finished
Status = Callable[[str], None]  # called with a line saying what is happening
