"""Named evaluations with fixed inputs, and the published numbers printed beside ours (never computed with)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlsr.settings import DEFAULT_DATASET


@dataclass(frozen=True)
class _Recipe:
    """An evaluation with fixed inputs: a dataset's split (its captions query its images), and the published rows.

    The images are indexed from their published vectors in float32, so the numbers are those of the
    reference computation (no rounding of the stored weights).
    """

    name: str
    dataset: str
    split: str
    published: dict = field(default_factory=dict)


# Text-to-image R@1 on the MS-COCO 5k test images, as reported by Nguyen et al., ECIR 2024 (secondary source:
# the project's method digest).
RECIPES = {
    "mscoco-test": _Recipe(
        "mscoco-test", DEFAULT_DATASET, "test",
        {"source": "Nguyen et al., ECIR 2024 (MS-COCO 5k test, text-to-image)",
         "rows": {"D2S-BLIP sparse (published)": {"R@1": 55.9}, "BLIP dense (published)": {"R@1": 57.0}}},
    ),
}
