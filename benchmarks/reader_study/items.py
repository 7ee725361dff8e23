"""What readers score: the Likert items with their anchors, and the A/B preference question."""

from __future__ import annotations

from dataclasses import asdict, dataclass

SCALE = (1, 2, 3, 4, 5)
PREFERENCE = "preference"
PREFERENCE_CHOICES = ("left", "equal", "right")  # what the browser sends; the server maps sides to arms


@dataclass(frozen=True)
class Item:
    """One Likert item: a key, the question and one anchor per score 1..5 (5 is always best)."""

    key: str
    title: str
    anchors: tuple[str, str, str, str, str]

    def to_dict(self) -> dict:
        """Plain data for the manifest and the browser."""
        return asdict(self)


ITEMS: tuple[Item, ...] = (
    Item("overall", "Overall image quality", ("Non-diagnostic", "Poor", "Acceptable", "Good", "Excellent")),
    Item("noise", "Noise", ("Severe: obscures anatomy", "Marked", "Moderate", "Mild", "Minimal or none")),
    Item("sharpness", "Sharpness", ("Severely blurred", "Markedly blurred", "Acceptable", "Sharp", "Very sharp")),
    Item("artefacts", "Artefacts", ("Severe: non-diagnostic", "Marked", "Moderate", "Minor", "None")),
    Item("confidence", "Diagnostic confidence", ("Cannot diagnose", "Low", "Moderate", "High", "Full")),
)
ITEM_KEYS = tuple(item.key for item in ITEMS)
PREFERENCE_QUESTION = "Which image would you rather read for diagnosis?"
