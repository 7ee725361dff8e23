"""Answers in SQLite (STUDY/answers.sqlite): every click is one committed row, so a closed
browser or a restarted server loses nothing. Readers are known by a random token, stored only
as its SHA-256; every query of answers is scoped to one reader id."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

DATABASE = "answers.sqlite"
EQUAL = "equal"
SCHEMA = """
CREATE TABLE IF NOT EXISTS readers (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, token_sha256 TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL, invited INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS likert (
    reader INTEGER NOT NULL REFERENCES readers(id), case_id TEXT NOT NULL, arm TEXT NOT NULL,
    item TEXT NOT NULL, score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5), seconds REAL,
    answered_at TEXT NOT NULL, PRIMARY KEY (reader, case_id, arm, item));
CREATE TABLE IF NOT EXISTS preference (
    reader INTEGER NOT NULL REFERENCES readers(id), case_id TEXT NOT NULL, arm_a TEXT NOT NULL,
    arm_b TEXT NOT NULL, left_arm TEXT NOT NULL, choice TEXT NOT NULL, seconds REAL,
    answered_at TEXT NOT NULL, PRIMARY KEY (reader, case_id, arm_a, arm_b));
"""


class NameTaken(ValueError):
    """A reader of this name exists already."""


@dataclass(frozen=True)
class Reader:
    """A signed-up reader."""

    id: int
    name: str
    created: str


def token_digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """The study's answers database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connection() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            with db:  # one transaction, committed on leaving
                yield db
        finally:
            db.close()

    def add_reader(self, name: str, invited: bool = False) -> tuple[Reader, str]:
        """A new reader and their token (shown once); NameTaken if the name exists."""
        token = secrets.token_urlsafe(18)
        created = now()
        try:
            with self._connection() as db:
                cursor = db.execute("INSERT INTO readers (name, token_sha256, created, invited) VALUES (?, ?, ?, ?)",
                                    (name, token_digest(token), created, int(invited)))
        except sqlite3.IntegrityError:
            raise NameTaken(name) from None
        return Reader(int(cursor.lastrowid), name, created), token

    def reader_by_token(self, token: str) -> Reader | None:
        """The reader this token belongs to, or None."""
        with self._connection() as db:
            row = db.execute("SELECT id, name, created FROM readers WHERE token_sha256 = ?",
                             (token_digest(token),)).fetchone()
        return Reader(*row) if row else None

    def readers(self) -> list[Reader]:
        """Every reader, in sign-up order."""
        with self._connection() as db:
            return [Reader(*row) for row in db.execute("SELECT id, name, created FROM readers ORDER BY id")]

    def save_likert(self, reader: int, case_id: str, arm: str, item: str, score: int, seconds: float | None) -> None:
        """Record (or replace) one Likert score."""
        with self._connection() as db:
            db.execute("INSERT OR REPLACE INTO likert VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (reader, case_id, arm, item, score, seconds, now()))

    def save_preference(self, reader: int, case_id: str, pair: tuple[str, str], left: str, choice: str,
                        seconds: float | None) -> None:
        """Record (or replace) one A/B choice: an arm id, or EQUAL."""
        with self._connection() as db:
            db.execute("INSERT OR REPLACE INTO preference VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (reader, case_id, pair[0], pair[1], left, choice, seconds, now()))

    def likert_of(self, reader: int) -> dict[tuple[str, str], dict[str, int]]:
        """One reader's scores: (case, arm) -> item -> score."""
        answers: dict[tuple[str, str], dict[str, int]] = {}
        with self._connection() as db:
            for case_id, arm, item, score in db.execute(
                    "SELECT case_id, arm, item, score FROM likert WHERE reader = ?", (reader,)):
                answers.setdefault((case_id, arm), {})[item] = score
        return answers

    def preferences_of(self, reader: int) -> dict[tuple[str, str, str], str]:
        """One reader's A/B choices: (case, arm_a, arm_b) -> arm id or EQUAL."""
        with self._connection() as db:
            rows = db.execute("SELECT case_id, arm_a, arm_b, choice FROM preference WHERE reader = ?", (reader,))
            return {(case_id, a, b): choice for case_id, a, b, choice in rows}

    def last_answer(self, reader: int) -> str | None:
        """When the reader last answered anything (UTC), or None."""
        with self._connection() as db:
            row = db.execute("SELECT max(t) FROM (SELECT max(answered_at) AS t FROM likert WHERE reader = ?1 "
                             "UNION ALL SELECT max(answered_at) FROM preference WHERE reader = ?1)", (reader,)).fetchone()
        return row[0] if row else None

    def has_answers(self) -> bool:
        """Whether any reader has scored anything (signed-up readers alone are not answers)."""
        with self._connection() as db:
            return any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in ("likert", "preference"))

    def all_likert(self) -> list[tuple]:
        """Every Likert row: reader name, case, arm, item, score, seconds, answered_at."""
        with self._connection() as db:
            return db.execute("SELECT r.name, l.case_id, l.arm, l.item, l.score, l.seconds, l.answered_at "
                              "FROM likert l JOIN readers r ON r.id = l.reader "
                              "ORDER BY r.id, l.case_id, l.arm, l.item").fetchall()

    def all_preferences(self) -> list[tuple]:
        """Every A/B row: reader name, case, arm_a, arm_b, left arm, choice, seconds, answered_at."""
        with self._connection() as db:
            return db.execute("SELECT r.name, p.case_id, p.arm_a, p.arm_b, p.left_arm, p.choice, p.seconds, "
                              "p.answered_at FROM preference p JOIN readers r ON r.id = p.reader "
                              "ORDER BY r.id, p.case_id, p.arm_a, p.arm_b").fetchall()
