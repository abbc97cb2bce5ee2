"""Named evaluations with fixed inputs, and the published numbers printed beside ours (never computed with)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlsr.settings import DEFAULT_DATASET, DEFAULT_INDEX


@dataclass(frozen=True)
class Recipe:
    """An evaluation with fixed inputs: which dataset's split queries which index, and the published rows."""

    name: str
    dataset: str
    split: str
    index: str
    published: dict = field(default_factory=dict)


# Text-to-image R@1 on the MS-COCO 5k test images, as reported by Nguyen et al., ECIR 2024 (secondary source:
# the project's method digest).
RECIPES = {
    "mscoco-test": Recipe(
        "mscoco-test", DEFAULT_DATASET, "test", DEFAULT_INDEX,
        {"source": "Nguyen et al., ECIR 2024 (MS-COCO 5k test, text-to-image)",
         "rows": {"D2S-BLIP sparse (published)": {"R@1": 55.9}, "BLIP dense (published)": {"R@1": 57.0}}},
    ),
}
