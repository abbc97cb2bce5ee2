"""What a wiki's image information says about a file, read for an editor: its author (HTML stripped), its licence
(short name, URL, family), the attribution the licence requires, its description, and whether mlsr may take it.

The credit line follows the TASL rule editors use (Title, Author, Source, Licence). Plain Python: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

from mlsr.errors import InputError
from mlsr.items import Item

FREE_FAMILIES = ("CC0", "PD", "CC-BY", "CC-BY-SA", "GFDL", "FAL")  # licences Commons accepts as free
_MAX_SOURCE_PIXELS = 100_000_000  # larger originals get no reliable thumbnail from the wiki: skipped
_MAX_DESCRIPTION_CHARS = 2000


@dataclass(frozen=True)
class WikiFile:
    """One file of a wiki, as an index item records it (see `item`)."""

    title: str  # File:Name.jpg, the item's id
    page: str  # the description page's URL: the source an editor cites
    picture: str  # the thumbnail URL the API gave: the only URL fetched for this file
    author: str
    license: str  # the licence's short name, e.g. "CC BY-SA 4.0"
    license_url: str
    attribution: str  # the attribution text the licence requires ("" when none is given)
    description: str

    @property
    def credit(self) -> str:
        """Title, author, source and licence, as the licence asks them shown with the picture."""
        by = self.attribution or self.author
        licence = f"{self.license} ({self.license_url})" if self.license_url else self.license
        return f"{self.title} by {by}, {licence}, via {_wiki_name(self.page)} ({self.page})"

    def item(self) -> Item:
        """The index item: id, image (the thumbnail URL), source (the page), captions and the credit fields."""
        return Item(id=self.title, image=self.picture, source=self.page,
                    captions=[self.description or _caption_from_title(self.title)], author=self.author,
                    license=self.license, license_url=self.license_url, attribution=self.attribution,
                    credit=self.credit)


def read_file(page: dict, families: frozenset[str] | None) -> WikiFile | str:
    """The file an API page describes, or why it is skipped: missing, no image information, not an image, too
    large, no thumbnail, or a licence outside `families` (None: any licence, non-free too)."""
    infos = page.get("imageinfo") or []
    if page.get("missing") or page.get("invalid"):
        return "not on the wiki (missing)"
    if not infos or not isinstance(infos[0], dict):
        return "no image information"
    info = infos[0]
    mime = str(info.get("mime") or "")
    if not mime.startswith("image/"):
        return f"not an image ({mime or 'unknown media type'})"
    pixels = int(info.get("width") or 0) * int(info.get("height") or 0)
    if pixels > _MAX_SOURCE_PIXELS:
        return f"too large ({info.get('width')} x {info.get('height')} pixels; at most {_MAX_SOURCE_PIXELS:,})"
    picture = str(info.get("thumburl") or "")
    if not picture.startswith(("http://", "https://")):
        return "the wiki made no thumbnail of it"
    meta = info.get("extmetadata") or {}
    licence = plain(_value(meta, "LicenseShortName")) or plain(_value(meta, "License"))
    family = _licence_family(licence)
    free = family in FREE_FAMILIES and _value(meta, "NonFree").strip().lower() not in ("true", "1")
    if families is not None and not free:
        return f"not free (licence: {licence or 'none given'})"
    if families is not None and family not in families:
        return f"licence {licence} is not among {', '.join(sorted(families))}"
    author = plain(_value(meta, "Artist")) or plain(_value(meta, "Credit")) or "unknown author (see the file page)"
    required = _value(meta, "AttributionRequired").strip().lower() == "true"
    return WikiFile(
        title=str(page["title"]), page=str(info.get("descriptionurl") or ""), picture=picture, author=author,
        license=licence or "licence not given", license_url=str(_value(meta, "LicenseUrl")).strip(),
        attribution=plain(_value(meta, "Attribution")) if required else "",
        description=plain(_value(meta, "ImageDescription"))[:_MAX_DESCRIPTION_CHARS],
    )


def _licence_family(name: str) -> str:
    """CC0, PD, CC-BY, CC-BY-SA, GFDL, FAL, or '' (another licence, or a non-free one such as CC BY-NC)."""
    text = " ".join(name.upper().replace("_", " ").split())
    if text.startswith("CC0") or "CC-ZERO" in text or "CC ZERO" in text:
        return "CC0"
    if text.startswith(("PD", "PUBLIC DOMAIN")):
        return "PD"
    match = re.match(r"CC[ -]BY(?:[ -](SA|NC|ND))?", text)
    if match:
        return {None: "CC-BY", "SA": "CC-BY-SA"}.get(match.group(1), "")
    if text.startswith("GFDL"):
        return "GFDL"
    if text.startswith(("FAL", "FREE ART")):
        return "FAL"
    return ""


def parse_licences(spec: str | None) -> frozenset[str] | None:
    """`free` (default: every free family), `any` (non-free too: None), or a comma list such as `CC0,CC-BY`."""
    spec = (spec or "free").strip()
    if spec.lower() == "free":
        return frozenset(FREE_FAMILIES)
    if spec.lower() == "any":
        return None
    wanted = {part.strip().upper().replace(" ", "-") for part in spec.split(",") if part.strip()}
    unknown = sorted(wanted - set(FREE_FAMILIES))
    if not wanted or unknown:
        raise InputError(f"licences must be 'free', 'any' or a comma list of {', '.join(FREE_FAMILIES)};"
                         f" got {', '.join(unknown) or repr(spec)}.")
    return frozenset(wanted)


def item_licence(item: Item) -> str:
    """An index item's licence family ('' for an item without a recorded licence, e.g. a COCO photo)."""
    return _licence_family(str(item.get("license") or ""))


def _wiki_name(page: str) -> str:
    """How a credit names the wiki a page is on: 'Wikimedia Commons', else its host."""
    host = urlsplit(page).hostname or "the wiki"
    return "Wikimedia Commons" if host == "commons.wikimedia.org" else host


def _caption_from_title(title: str) -> str:
    """A file's name as words (`File:Water_buffalo_bathing.jpg` -> `Water buffalo bathing`): the caption of a file
    without a description."""
    name = title.split(":", 1)[-1]
    name = name.rsplit(".", 1)[0] if "." in name else name
    return " ".join(name.replace("_", " ").split())


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("br", "p", "div", "li"):
            self.parts.append(" ")


def plain(value: str) -> str:
    """Text from the wiki's HTML (tags dropped, entities decoded, whitespace collapsed)."""
    parser = _Text()
    parser.feed(str(value or ""))
    parser.close()
    return " ".join("".join(parser.parts).split())


def _value(meta: dict, key: str) -> str:
    entry = meta.get(key)
    value = entry.get("value") if isinstance(entry, dict) else entry
    return str(value) if value is not None else ""


def licence_choices(items: Sequence[Item]) -> list[str]:
    """The licence families a user may filter by: those the gallery's items record, in FREE_FAMILIES' order; none
    for a gallery that records no licence (COCO photos), whose screen then shows no filter."""
    found = {item_licence(item) for item in items}
    return [family for family in FREE_FAMILIES if family in found]
