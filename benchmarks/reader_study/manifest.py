"""The study manifest (STUDY/manifest.json): arms, cases, their images' opaque ids and the seed.

The manifest stays on the physicist's machine: the server reads it to know which image is which
arm, and never sends it (or anything in it but opaque image ids) to a browser.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.reader_study.items import ITEMS, PREFERENCE_QUESTION
from runtime.outputs import write_json

MANIFEST = "manifest.json"
IMAGES = "images"
FORMAT = 1
IMAGE_ID = re.compile(r"[0-9a-f]{32}")


class StudyError(ValueError):
    """A study folder that cannot be used; the message is one line naming the file and the cause."""


@dataclass(frozen=True)
class Arm:
    """One way of showing the cases: ``kind`` original, medclear or nlm, with its options."""

    id: str  # "a1", "a2", ...: internal, never sent to a browser
    label: str  # the physicist's name for it, used in the report
    kind: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One input image: its internal id, source file, the frame shown and its rendered images."""

    id: str  # "c01", ...: internal, never sent to a browser
    source: str
    modality: str
    frame: int
    windows: tuple[str, ...]  # display presets, e.g. ("Soft tissue", "Lung") for CT
    images: dict[str, dict[str, str]]  # arm id -> window -> opaque image id


@dataclass
class Study:
    """A prepared study: where it lives and what it holds."""

    root: Path
    seed: int
    arms: list[Arm]
    cases: list[Case]
    created: str
    ab_pairs: list[tuple[str, str]] = field(default_factory=list)  # arm id pairs compared side by side
    items: list[dict] = field(default_factory=lambda: [item.to_dict() for item in ITEMS])
    preference_question: str = PREFERENCE_QUESTION

    @property
    def images_dir(self) -> Path:
        """The folder of rendered PNGs, one per case x arm x window."""
        return self.root / IMAGES

    def image_path(self, image_id: str) -> Path | None:
        """The PNG of an opaque id, or None if the id is not one of this study's."""
        if not IMAGE_ID.fullmatch(image_id) or image_id not in self.image_ids():
            return None
        return self.images_dir / f"{image_id}.png"

    def image_ids(self) -> set[str]:
        """Every opaque image id of the study."""
        return {image for case in self.cases for windows in case.images.values() for image in windows.values()}

    def arm(self, arm_id: str) -> Arm:
        """The arm with this internal id."""
        return next(arm for arm in self.arms if arm.id == arm_id)

    def case(self, case_id: str) -> Case:
        """The case with this internal id."""
        return next(case for case in self.cases if case.id == case_id)

    def to_dict(self) -> dict:
        """Plain data for manifest.json."""
        return {"format": FORMAT, "seed": self.seed, "created": self.created, "items": self.items,
                "ab_pairs": [list(pair) for pair in self.ab_pairs],
                "preference_question": self.preference_question,
                "arms": [asdict(arm) for arm in self.arms],
                "cases": [{**asdict(case), "windows": list(case.windows)} for case in self.cases]}

    def save(self) -> None:
        """Write manifest.json atomically."""
        write_json(self.root / MANIFEST, self.to_dict())


def load_study(root: Path) -> Study:
    """The study in ``root``; StudyError (one line) if it is missing or malformed."""
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no study manifest here (run `prepare` first)") from None
    except (OSError, ValueError) as error:
        raise StudyError(f"{path}: cannot read the study manifest ({error.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StudyError(f"{path}: not a reader study manifest of format {FORMAT}")
    try:
        arms = [Arm(**arm) for arm in data["arms"]]
        cases = [Case(**{**case, "windows": tuple(case["windows"])}) for case in data["cases"]]
        pairs = [(str(a), str(b)) for a, b in data["ab_pairs"]]
        return Study(root, int(data["seed"]), arms, cases, str(data["created"]), pairs, list(data["items"]),
                     str(data["preference_question"]))
    except (KeyError, TypeError, ValueError) as error:
        raise StudyError(f"{path}: malformed study manifest ({error.__class__.__name__}: {error})") from None
