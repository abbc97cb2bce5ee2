"""Builders of datasets in the exact published layouts, with a planted ground truth, for the evaluation tests.

- `write_dense_dataset`: the lsr42 layout (img_embs.parquet, text_embs.parquet with `id`, `emb`; dataset_meta.json
  in Karpathy's format). Planted: of each test image's 5 captions, the first 3 carry exactly the image's
  vector and the other 2 the next image's vector, so the dense run's R@1 is exactly 0.6.
- `write_atomic`: the AToMiC layout (Texts, Images, Qrels parquet shards). Planted: query i and the caption of its
  relevant image share a word that the planted head lights up; distractor captions share none.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.data import make_image
from tests.helpers.models import DENSE_SIZE

SPLITS = ("train", "val", "test", "restval")
TEST_IMAGES = 40
CAPTIONS_PER_IMAGE = 5
PLANTED_CORRECT = 3  # of 5 captions carry their own image's vector


def _emb_table(ids: list, vectors: np.ndarray) -> pa.Table:
    emb = pa.array([row.tolist() for row in vectors.astype(np.float32)], type=pa.list_(pa.float32()))
    return pa.table({"id": pa.array(ids), "emb": emb})


def write_dense_dataset(folder: Path, name: str = "mscoco", seed: int = 0) -> Path:
    """A small dense dataset: 10 train, 6 val, 40 test, 4 restval images; 5 captions each; shuffled parquet rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"train": 10, "val": 6, "test": TEST_IMAGES, "restval": 4}
    images, image_vectors, text_ids, text_vectors = [], [], [], []
    imgid = sentid = 0
    order = [split for split in SPLITS for _ in range(counts[split])]
    rng.shuffle(order)
    vectors = rng.normal(size=(len(order), DENSE_SIZE)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for imgid, split in enumerate(order):
        folder_name = "val2014" if split != "train" else "train2014"
        cocoid = 100000 + imgid * 7
        filename = (f"COCO_{folder_name}_{cocoid:012d}.jpg" if name == "mscoco" else f"{1000 + imgid}.jpg")
        sentences = []
        for k in range(CAPTIONS_PER_IMAGE):
            sentences.append({"tokens": ["a", "photo", str(imgid)], "raw": f"A photo number {imgid}, caption {k}.",
                              "imgid": imgid, "sentid": sentid})
            text_ids.append(str(sentid))
            sentid += 1
        entry = {"filepath": folder_name, "sentids": [s["sentid"] for s in sentences], "filename": filename,
                 "imgid": imgid, "split": split, "sentences": sentences}
        if name == "mscoco":
            entry["cocoid"] = cocoid
        else:
            entry.pop("filepath")
        images.append(entry)
        image_vectors.append(vectors[imgid])
    # Planted captions: within the test split, caption k < 3 of image i is image i's vector, the rest the next image's.
    test_ids = [image["imgid"] for image in images if image["split"] == "test"]
    next_in_test = {a: test_ids[(j + 1) % len(test_ids)] for j, a in enumerate(test_ids)}
    for image in images:
        for k, sentence in enumerate(image["sentences"]):
            if image["split"] == "test":
                source = image["imgid"] if k < PLANTED_CORRECT else next_in_test[image["imgid"]]
                text_vectors.append(vectors[source])
            else:
                noisy = vectors[image["imgid"]] + 0.3 * rng.normal(size=DENSE_SIZE)
                text_vectors.append((noisy / np.linalg.norm(noisy)).astype(np.float32))
    shuffle = rng.permutation(len(image_vectors))
    pq.write_table(_emb_table([int(i) for i in shuffle], np.stack(image_vectors)[shuffle]), folder / "img_embs.parquet")
    text_shuffle = rng.permutation(len(text_ids))
    pq.write_table(_emb_table([text_ids[i] for i in text_shuffle], np.stack(text_vectors)[text_shuffle]),
                   folder / "text_embs.parquet", row_group_size=64)
    (folder / "dataset_meta.json").write_text(json.dumps({"images": images, "dataset": name}))
    return folder


ATOMIC_QUERIES = [  # (text_id, page_title, section_title, context_section_description, relevant caption)
    ("t-001", "Water buffalo", "Farming", "Farmers lead a buffalo through rice paddies.", "a buffalo in a paddy"),
    ("t-002", "Wedding", "Reception", "The couple cut a tall cake at the reception.", "a tall wedding cake"),
    ("t-003", "Highways", "History", "The old road crossed the mountains.", "an old mountain road"),
]
DISTRACTOR_CAPTIONS = ["a grey stone wall", "two red chairs", "a blue sky over water", "green leaves",
                       "a small wooden door", "an empty train station", "clouds at sunset", "a yellow tram"]


def _image_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    make_image(seed).save(buffer, format="WEBP")
    return buffer.getvalue()


def write_atomic(root: Path) -> tuple[Path, Path, Path]:
    """Three dataset folders (texts, images, qrels) with the AToMiC v0.2 fields, in `data/<split>-*.parquet` shards."""
    texts, images, qrels = root / "texts", root / "images", root / "qrels"
    for folder in (texts, images, qrels):
        (folder / "data").mkdir(parents=True, exist_ok=True)
    other = ("t-900", "Unjudged", "Section", "A section nobody judged.")
    rows = [(q[0], q[1], q[2], q[3]) for q in ATOMIC_QUERIES] + [other]
    pq.write_table(pa.table({
        "text_id": [r[0] for r in rows], "page_url": [f"https://en.wikipedia.org/wiki/{r[1]}" for r in rows],
        "page_title": [r[1] for r in rows], "section_title": [r[2] for r in rows],
        "hierachy": [[r[1], r[2]] for r in rows], "context_page_description": ["Page text." for _ in rows],
        "context_section_description": [r[3] for r in rows], "media": [[] for _ in rows],
        "category": [[] for _ in rows], "source_id": ["x" for _ in rows],
    }), texts / "data" / "validation-00000-of-00001-abc.parquet")
    pq.write_table(pa.table({"text_id": ["t-777"], "page_title": ["Train page"], "section_title": ["S"],
                             "context_section_description": ["train text"], "context_page_description": ["p"]}),
                   texts / "data" / "train-00000-of-00001-abc.parquet")
    image_ids = [f"img-{i:03d}" for i in range(len(ATOMIC_QUERIES) + len(DISTRACTOR_CAPTIONS))]
    captions = [q[4] for q in ATOMIC_QUERIES] + DISTRACTOR_CAPTIONS
    order = [3, 0, 4, 5, 1, 6, 7, 2, 8, 9, 10]  # relevant images spread over both shards
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for shard, rows_of in enumerate((order[:6], order[6:])):
        pq.write_table(pa.table({
            "image_url": [f"https://upload.wikimedia.org/{image_ids[i]}.jpg" for i in rows_of],
            "image_id": [image_ids[i] for i in rows_of],
            "language": [["en"] for _ in rows_of],
            "caption_reference_description": [captions[i] for i in rows_of],
            "caption_alt_text_description": [None for _ in rows_of],
            "caption_attribution_description": ["CC BY-SA" for _ in rows_of],
            "image": pa.array([{"bytes": _image_bytes(i), "path": None} for i in rows_of], type=image_type),
        }), images / "data" / f"train-{shard:05d}-of-00002-def.parquet")
    judged = [(q[0], image_ids[j], 1) for j, q in enumerate(ATOMIC_QUERIES)] + [("t-001", image_ids[5], 0)]
    pq.write_table(pa.table({"text_id": [j[0] for j in judged], "Q0": ["Q0"] * len(judged),
                             "image_id": [j[1] for j in judged], "rel": [j[2] for j in judged]}),
                   qrels / "data" / "validation-00000-of-00001-xyz.parquet")
    pq.write_table(pa.table({"text_id": ["t-777"], "Q0": ["Q0"], "image_id": [image_ids[4]], "rel": [1]}),
                   qrels / "data" / "train-00000-of-00001-xyz.parquet")
    return texts, images, qrels


PUNCTUATED_WORDS = ["dog", "cat", "boat", "bus", "field", "market", "boy", "girl", "cake", "road", "beach", "kite",
                    "horse", "train", "street", "table", "red", "small", "old", "two"]
PUNCTUATED_TEMPLATES = ['A {0} (near a {1}) and a {2}.', 'Two "{0}s": on the {1}; {2}!', '{0} * {1} # {2} ~ here...',
                        'The {0}, the {1} -- and the {2}?', '{0}/{1}: {2} (again).']


def write_punctuated_dataset(folder: Path, seed: int = 0, test_images: int = 40) -> Path:
    """A test split in the lsr42 layout whose captions are full of the punctuation BLIP's cleaning drops.

    Each caption's vector is its image's vector plus most of another test image's and a little noise, so
    rankings are neither perfect nor random.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = rng.normal(size=(test_images + 4, DENSE_SIZE))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    images, text_ids, text_vectors = [], [], []
    for imgid in range(test_images + 4):
        sentences = []
        for template in PUNCTUATED_TEMPLATES:
            words = rng.choice(PUNCTUATED_WORDS, 3, replace=False)
            sentences.append({"raw": template.format(*words), "sentid": len(text_ids), "imgid": imgid})
            other = vectors[rng.integers(test_images)]  # a confusable second image in every caption
            noisy = vectors[imgid] + 0.9 * other + 0.05 * rng.normal(size=DENSE_SIZE)
            text_ids.append(str(len(text_ids)))
            text_vectors.append(noisy / np.linalg.norm(noisy))
        images.append({"imgid": imgid, "filename": f"COCO_val2014_{imgid:012d}.jpg", "filepath": "val2014",
                       "split": "test" if imgid < test_images else "val", "sentids": [s["sentid"] for s in sentences],
                       "sentences": sentences})
    pq.write_table(_emb_table([str(i) for i in range(len(images))], vectors), folder / "img_embs.parquet")
    pq.write_table(_emb_table(text_ids, np.stack(text_vectors)), folder / "text_embs.parquet")
    (folder / "dataset_meta.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return folder


EXAMPLE_FILE = "COCO_val2014_000000184613.jpg"  # image id 2 of lsr42/mscoco-blip-dense: the README's example
VERIFY_CAPTIONS = {
    "COCO_val2014_000000391895.jpg": ["A man (in a red shirt) rides a small motorbike.", "Dirt road; helmet on!",
                                      "A motorcyclist: on a country road.", "man on a bike", "A man riding a bike."],
    EXAMPLE_FILE: ["A boy leads water buffalo (cattle) through a market.", "People walk with cows!",
                   "An umbrella, a boy: and buffalo.", "cattle in a field", "A crowd walks with animals."],
    "COCO_val2014_000000522418.jpg": ["A woman cuts a large white cake.", "A sheet cake (with a knife)!",
                                      "Hair net; a cake: a knife.", "woman cutting cake", "A cake being cut."],
}


def write_verify_dataset(folder: Path, encoder, generated: int = 3) -> Path:
    """The published layout, with vectors made by `encoder`'s own backbone: what `mlsr verify` finds on a
    machine whose models made the published vectors.

    Test split: the three COCO photos of assets/images (EXAMPLE_FILE has image id 2, as in lsr42/mscoco-blip-dense)
    and `generated` synthetic images, five captions each. Captions are embedded as BLIP reads a caption.
    """
    from mlsr.text import clean_caption
    from tests.helpers.data import REAL_IMAGES, make_image

    folder.mkdir(parents=True, exist_ok=True)
    names = ["generated-0.jpg", "COCO_val2014_000000391895.jpg", EXAMPLE_FILE, "COCO_val2014_000000522418.jpg",
             *(f"generated-{i}.jpg" for i in range(1, generated))]
    pictures = [REAL_IMAGES / name if name.startswith("COCO_") else make_image(int(name[10:-4]) + 7) for name in names]
    _, image_vectors = encoder.encode_images_with_dense(pictures)
    images, raws = [], []
    for imgid, name in enumerate(names):
        captions = VERIFY_CAPTIONS.get(name) or [f"A colour field (number {imgid}) with a bright box{end}"
                                                 for end in (".", "!", ";", ": yes", "...")]
        sentences = [{"raw": raw, "sentid": len(raws) + k, "imgid": imgid} for k, raw in enumerate(captions)]
        raws += captions
        images.append({"imgid": imgid, "filename": name, "filepath": "val2014", "split": "test",
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    text_vectors = encoder.backbone.embed_texts([clean_caption(raw) for raw in raws]).numpy()
    pq.write_table(_emb_table([str(i) for i in range(len(names))], image_vectors), folder / "img_embs.parquet")
    pq.write_table(_emb_table([str(i) for i in range(len(raws))], text_vectors), folder / "text_embs.parquet")
    (folder / "dataset_meta.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return folder
