"""`mlsr verify`: does this machine, with these models, reproduce the published vectors and numbers?

The Hub is what settles it (the published BLIP vectors, head and dataset), so this runs wherever the Hub
is reachable, or on local folders given in place of the ids. Four checks, each a number and a verdict:

1. text agreement: N test captions of the dataset, encoded live by the backbone as BLIP reads a caption
   (cleaned, 35 tokens), against their published `text_embs`: cosine min and median; PASS if the median
   is >= 0.99. This is what tells which BLIP made the published vectors (LAVIS holds two COCO checkpoints).
2. image agreement: the COCO photos shipped in `assets/images` that the dataset's `dataset_meta.json` lists
   (matched by file name), encoded live, against their published `img_embs`; the same rule.
3. published example: the head on the published vector of image id 2 (COCO_val2014_000000184613.jpg)
   decodes to the reference README's top terms: at least 8 of its top 10 are among the README's top 10.
4. retrieval: R@1 of the head on the dataset's test split with the published vectors (expanded queries,
   float32 index) within 1.0 point of the published figure (55.9 for the default head) or `expect_r1`.

The verdict is saved as JSON beside the app's index folder (`verdict_path`), so the About screen can show it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast
from collections.abc import Sequence

import numpy as np

from mlsr import __version__
from mlsr._files import atomic_write_json
from mlsr.data.lsr42 import IMAGE_FILE, META_FILE, TEXT_FILE, open_dataset
from mlsr.errors import InputError
from mlsr.images import IMAGE_SUFFIXES
from mlsr.index.hub import is_hub_index
from mlsr.settings import (DEFAULT_BACKBONE, DEFAULT_DATASET, DEFAULT_HEAD, DEFAULT_INDEX, DEFAULT_TOKENIZER,
                           ENCODE_BATCH, Status)
from mlsr.text import clean_caption

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.data.lsr42 import DatasetFolder
    from mlsr.models.encoder import Encoder

logger = logging.getLogger(__name__)

_CHECKS: tuple[str, ...] = ("text", "image", "example", "retrieval")
_OPTIONAL_CHECKS: tuple[str, ...] = ("int8",)  # run only when asked for (only='int8')
_TITLES = {"text": "text agreement", "image": "image agreement", "example": "published example",
          "retrieval": "retrieval R@1", "int8": "8-bit text"}
_MIN_INT8_COSINE = 0.99  # the 8-bit text path's median sparse cosine with float32...
_MIN_INT8_OVERLAP = 0.9  # ...and mean top-10 overlap of the ranked test gallery, before it could be the default
_MIN_MEDIAN_COSINE = 0.99
_EXAMPLE_IMAGE_ID = "2"  # the README's example: row 2 of img_embs.parquet, image id 2 in dataset_meta.json
# The README's top 10 terms of that image with the published head (animals 1.68, boy 1.62, ...).
EXAMPLE_TERMS = ("animals", "boy", "buffalo", "animal", "people", "walking", "cow", "child", "man", "crowd")
_MIN_EXAMPLE_OVERLAP = 8
_R1_TOLERANCE = 1.0  # percentage points
_PUBLISHED_R1 = {DEFAULT_HEAD: 55.9}  # text -> image R@1 (%) on MS-COCO 5k test, Nguyen et al., ECIR 2024
_SPLIT = "test"
_ASSET_IMAGES = Path(__file__).resolve().parents[2] / "assets" / "images"
_VERDICT_FILE = "verify.json"


@dataclass
class CheckResult:
    """One check: its number (1-4), name, the number it measured, PASS or not, and a line saying what was seen."""

    number: int
    name: str
    passed: bool
    value: float | None
    summary: str

    def line(self) -> str:
        return f"{self.number}  {_TITLES[self.name]:<18} {'PASS' if self.passed else 'FAIL'}  {self.summary}"


@dataclass
class Verdict:
    """The checks that ran, on which models and dataset, and when (UTC)."""

    checks: list[CheckResult]
    models: dict[str, str]
    dataset: str
    finished: str = ""
    mlsr: str = __version__
    expect_r1: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_json(cls, data: dict) -> Verdict:
        checks = [CheckResult(int(c["number"]), str(c["name"]), bool(c["passed"]),
                              None if c.get("value") is None else float(c["value"]), str(c["summary"]))
                  for c in data["checks"]]
        return cls(checks, {str(k): str(v) for k, v in data["models"].items()}, str(data["dataset"]),
                   str(data.get("finished", "")), str(data.get("mlsr", "")), data.get("expect_r1"))


def parse_checks(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """`--only` -> the checks to run, in their order; every name must be one of _CHECKS."""
    if text is None:
        return _CHECKS
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    known = _CHECKS + _OPTIONAL_CHECKS
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise InputError(f"the checks to run (only) must be a comma-separated subset of {','.join(known)};"
                         f" got {text!r}.")
    return tuple(name for name in known if name in names)


def _expected_r1(head: str, expect_r1: float | None) -> float:
    """The R@1 (%) the retrieval check aims at: `expect_r1`, else the published figure of `head`."""
    if expect_r1 is not None:
        if not 0 <= expect_r1 <= 100:
            raise InputError(f"expect_r1 is a percentage in [0, 100], got {expect_r1}.")
        return float(expect_r1)
    if head not in _PUBLISHED_R1:
        raise InputError(f"no published R@1 is known for head {head!r}; give expect_r1=PERCENT, or leave"
                         " the retrieval check out (only='text,image,example').")
    return _PUBLISHED_R1[head]


def verify(
    *,
    backbone: str = DEFAULT_BACKBONE,
    head: str = DEFAULT_HEAD,
    tokenizer: str = DEFAULT_TOKENIZER,
    dataset: str | Path = DEFAULT_DATASET,
    captions: int = 200,
    only: Sequence[str] = _CHECKS,
    expect_r1: float | None = None,
    device: str | None = None,
    batch_size: int = ENCODE_BATCH,
    images_dir: str | Path = _ASSET_IMAGES,
    progress: Status | None = None,
) -> Verdict:
    """Run the checks in `only` (see the module doc) and return the verdict; nothing is saved here.

    Only what the chosen checks need is loaded: the backbone for text and image, the head for example
    and retrieval. Bad settings raise InputError before any model is loaded.
    """
    from mlsr.models.encoder import Encoder

    checks = parse_checks(only)
    if isinstance(captions, bool) or not isinstance(captions, int) or captions < 1:
        raise InputError(f"captions must be a whole number >= 1, got {captions!r}.")
    target = _expected_r1(head, expect_r1) if "retrieval" in checks else None
    say = progress or (lambda message: None)
    needs_backbone = bool({"text", "image", "int8"} & set(checks))
    say("loading the models")
    if needs_backbone:
        encoder = Encoder.from_pretrained(backbone, head, tokenizer, device=device, batch_size=batch_size)
    else:
        encoder = Encoder.head_only(head, tokenizer, device=device)
    source = open_dataset(dataset, [IMAGE_FILE, TEXT_FILE, META_FILE])
    results = []
    for name in checks:
        say(f"checking {_TITLES[name]}")
        number = (_CHECKS + _OPTIONAL_CHECKS).index(name) + 1
        if name == "text":
            results.append(_text_agreement(number, encoder, source, captions))
        elif name == "image":
            results.append(_image_agreement(number, encoder, source, Path(images_dir)))
        elif name == "int8":
            results.append(_int8_agreement(number, encoder, dataset, source, captions))
        elif name == "example":
            results.append(_published_example(number, encoder, source))
        else:  # "retrieval": `target` was read above, whenever the checks hold it
            results.append(_retrieval(number, encoder, dataset, cast(float, target)))
    models = {"backbone": str(backbone) if needs_backbone else "", "head": str(head), "tokenizer": str(tokenizer)}
    return Verdict(results, models, str(dataset), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   expect_r1=target)


# -- the checks ------------------------------------------------------------------------------------------------


def _agreement(number: int, name: str, live: np.ndarray, published: np.ndarray, what: str) -> CheckResult:
    """Cosines of matching rows; PASS if their median is >= _MIN_MEDIAN_COSINE."""
    cosines = np.sum(_unit(live) * _unit(published), axis=1)
    median, low = float(np.median(cosines)), float(cosines.min())
    return CheckResult(number, name, median >= _MIN_MEDIAN_COSINE, round(median, 4),
                       f"median cosine {median:.4f} (min {low:.4f}) over {len(cosines)} {what};"
                       f" needs a median >= {_MIN_MEDIAN_COSINE}")


def _text_agreement(number: int, encoder: Encoder, source: DatasetFolder, limit: int) -> CheckResult:
    sentences = [s for image in source.images(_SPLIT) for s in image.get("sentences", ())][:limit]
    ids = [str(s["sentid"]) for s in sentences]
    published = source.vectors(TEXT_FILE, ids)
    backbone = encoder._need_backbone()  # loaded whenever the text check runs
    # As BLIP reads a caption (and as encode-dense made the vectors): cleaned, one window, cut at 35 tokens.
    live = np.concatenate([backbone.embed_texts([clean_caption(str(s["raw"])) for s in sentences[i : i + 64]])
                           .cpu().numpy() for i in range(0, len(sentences), 64)])
    return _agreement(number, "text", live, published, f"{_SPLIT} captions")


def _image_agreement(number: int, encoder: Encoder, source: DatasetFolder, folder: Path) -> CheckResult:
    photos = {path.name: path for path in sorted(folder.glob("*")) if path.suffix.lower() in IMAGE_SUFFIXES} \
        if folder.is_dir() else {}
    listed = [(str(image["imgid"]), photos[str(image.get("filename"))]) for image in source.meta["images"]
              if str(image.get("filename")) in photos]
    if not listed:
        return CheckResult(number, "image", False, None,
                           f"none of the {len(photos)} photos in {folder.name}/ is listed in the dataset's {META_FILE}")
    published = source.vectors(IMAGE_FILE, [imgid for imgid, _ in listed])
    _, live = encoder.encode_images_with_dense([path for _, path in listed])
    return _agreement(number, "image", live, published, f"photos of {folder.parent.name}/{folder.name}/")


def _published_example(number: int, encoder: Encoder, source: DatasetFolder) -> CheckResult:
    known = {str(image["imgid"]) for image in source.meta["images"]}
    if _EXAMPLE_IMAGE_ID not in known:
        return CheckResult(number, "example", False, None, f"the dataset has no image id {_EXAMPLE_IMAGE_ID}")
    vector = encoder.sparsify(source.vectors(IMAGE_FILE, [_EXAMPLE_IMAGE_ID]))
    top = [term for term, _ in encoder.decode(vector[0], top_k=len(EXAMPLE_TERMS), keep_punctuation=True)]
    overlap = len(set(top) & set(EXAMPLE_TERMS))
    return CheckResult(number, "example", overlap >= _MIN_EXAMPLE_OVERLAP, float(overlap),
                       f"{overlap} of the top {len(EXAMPLE_TERMS)} terms of image {_EXAMPLE_IMAGE_ID} are the"
                       f" reference's (needs {_MIN_EXAMPLE_OVERLAP}): {', '.join(top)}")


def _retrieval(number: int, encoder: Encoder, dataset: str | Path, target: float) -> CheckResult:
    from mlsr.evaluation.queries import dataset_queries
    from mlsr.evaluation.runs import evaluate_index
    from mlsr.ingest.published import split_index

    index, _ = split_index(encoder, dataset, split=_SPLIT, precision="float32")
    queries, qrels = dataset_queries(encoder, dataset, _SPLIT, no_expand=False)
    evaluation = evaluate_index(index, queries, qrels, runs=["expand"], measures=["R@1"])
    r1 = 100 * evaluation.run("expand").metrics["R@1"]
    return CheckResult(number, "retrieval", abs(r1 - target) <= _R1_TOLERANCE, round(r1, 2),
                       f"R@1 {r1:.2f} on {len(queries.ids):,} {_SPLIT} captions x {len(index):,} images (expanded,"
                       f" float32); needs {target:.1f} +- {_R1_TOLERANCE}")


def _int8_agreement(number: int, encoder: Encoder, dataset: str | Path, source: DatasetFolder,
                    limit: int) -> CheckResult:
    """The 8-bit text path against float32 on test captions: sparse cosine of their expanded vectors, and the
    overlap of their top 10 in the test split's gallery (the head on the published image vectors)."""
    from mlsr.ingest.published import split_index

    texts = [str(s["raw"]) for image in source.images(_SPLIT) for s in image.get("sentences", ())][:limit]
    plain, int8 = encoder.encode_text(texts), encoder.with_int8_text().encode_text(texts)
    def row_sums(matrix):
        return np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()

    norms = np.sqrt(row_sums(plain.multiply(plain)) * row_sums(int8.multiply(int8)))
    cosines = row_sums(plain.multiply(int8)) / np.maximum(norms, 1e-12)
    index, _ = split_index(encoder, dataset, split=_SPLIT, precision="float32")
    found = [index.search(vectors, 10).indices.tolist() for vectors in (plain, int8)]
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*found)]))
    median = float(np.median(cosines))
    return CheckResult(number, "int8", median >= _MIN_INT8_COSINE and overlap >= _MIN_INT8_OVERLAP, round(median, 4),
                       f"median sparse cosine {median:.4f} (min {cosines.min():.4f}) with float32 over {len(texts)}"
                       f" {_SPLIT} captions, top-10 overlap {overlap:.3f} in {len(index):,} images; needs a median >="
                       f" {_MIN_INT8_COSINE} and an overlap >= {_MIN_INT8_OVERLAP}")


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# -- the saved verdict ------------------------------------------------------------------------------------------


def verdict_path(index: str | Path) -> Path:
    """Where the last verdict is kept: beside the app's index folder (e.g. index/verify.json); for an index
    given as a Hub id, beside the default index folder (the Hugging Face cache is not ours to write into)."""
    folder = Path(DEFAULT_INDEX) if not isinstance(index, Path) and is_hub_index(index) else Path(index)
    return folder.parent / _VERDICT_FILE


def save_verdict(verdict: Verdict, path: str | Path) -> Path:
    """Write the verdict as JSON (atomically), creating the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, verdict.to_json())
    return path


def load_verdict(path: str | Path) -> Verdict | None:
    """The saved verdict, or None when there is none or it cannot be read (the app never fails on it)."""
    try:
        return Verdict.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        if Path(path).exists():
            logger.warning("ignoring the saved verdict %s (%s)", path, error)
        return None


def verdict_summary(verdict: Verdict, models: dict[str, str | None]) -> dict:
    """What the app's About screen shows of a saved verdict; `models` are the ids the app loaded."""
    same = all(not verdict.models.get(role) or verdict.models.get(role) == models.get(role)
               for role in ("backbone", "head", "tokenizer"))
    return {"passed": verdict.passed, "finished": verdict.finished, "same_models": same,
            "checks": [{"number": c.number, "name": _TITLES.get(c.name, c.name), "passed": c.passed, "value": c.value}
                       for c in verdict.checks]}


def format_verdict(verdict: Verdict) -> str:
    """One line per check, then the verdict."""
    passed = sum(check.passed for check in verdict.checks)
    return "\n".join([*(check.line() for check in verdict.checks),
                      f"verdict: {'PASS' if verdict.passed else 'FAIL'} ({passed} of {len(verdict.checks)} checks"
                      " passed)"])
