"""Each reader's tasks in a randomised order, the same on every visit and after a server restart.

The order comes from the study's seed and the reader's name: all Likert tasks (every case x
arm, shuffled across cases and arms, so that arms of one case do not follow each other by
design), then the A/B tasks (every case x compared pair, shuffled, each with a random side for
each arm). Tasks are known to the browser only by their position in this list.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from benchmarks.reader_study.manifest import Study

LIKERT, AB = "likert", "ab"


@dataclass(frozen=True)
class Task:
    """One screen: a Likert task shows one arm of a case; an A/B task two arms, left and right."""

    kind: str
    case_id: str
    arms: tuple[str, ...]  # likert: (arm,); ab: (left arm, right arm)

    @property
    def pair(self) -> tuple[str, str]:
        """An A/B task's arms in study order, whichever side each was shown on."""
        first, second = sorted(self.arms, key=lambda arm: int(arm[1:]))
        return first, second


def task_count(study: Study) -> int:
    """How many tasks each reader has."""
    return len(study.cases) * (len(study.arms) + len(study.ab_pairs))


def reader_rng(study: Study, reader: str) -> random.Random:
    """A generator seeded by the study's seed and the reader's name."""
    digest = hashlib.sha256(f"{study.seed}\0{reader}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def reader_tasks(study: Study, reader: str) -> list[Task]:
    """The reader's tasks in their order."""
    rng = reader_rng(study, reader)
    likert = [Task(LIKERT, case.id, (arm.id,)) for case in study.cases for arm in study.arms]
    rng.shuffle(likert)
    pairs = []
    for case in study.cases:
        for first, second in study.ab_pairs:
            sides = (first, second) if rng.random() < 0.5 else (second, first)
            pairs.append(Task(AB, case.id, sides))
    rng.shuffle(pairs)
    return likert + pairs
