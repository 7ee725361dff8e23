"""The scoring web app (FastAPI; the page is plain HTML/JS from ``static/``).

What a browser gets: the static page, its reader's tasks by position (kind, window preset names,
image URLs ``/img/<opaque id>.png``, their own answers) and image bytes. Never the manifest,
case or arm ids, arm labels, file names or DICOM attributes. A reader is whoever holds a token
(an HttpOnly cookie set at sign-in, or ``Authorization: Bearer``); every answer read or written
is that reader's. The admin API (progress, inviting readers) takes the admin token only.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from benchmarks.reader_study.items import ITEM_KEYS, PREFERENCE, PREFERENCE_CHOICES, SCALE
from benchmarks.reader_study.manifest import Study
from benchmarks.reader_study.schedule import AB, LIKERT, Task, reader_tasks
from benchmarks.reader_study.store import EQUAL, NameTaken, Reader, Store

COOKIE = "reader_token"
COOKIE_DAYS = 60
STATIC = {  # file -> media type; only these are served
    "index.html": "text/html; charset=utf-8",
    "admin.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Settings:
    """How the app lets readers in."""

    admin_token: str
    name_signin: bool = True  # False: only tokens issued on the admin page
    secure_cookie: bool = False  # True when served over TLS


class SignIn(BaseModel):
    """A new reader's name, or a returning reader's token."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    token: str | None = Field(default=None, max_length=200)


class Answer(BaseModel):
    """One click: the task's position in the reader's list, the item and the value."""

    model_config = ConfigDict(extra="forbid")
    task: int = Field(ge=0)
    item: str = Field(max_length=40)
    value: StrictInt | StrictStr  # a JSON true is no score of 1
    seconds: float | None = Field(default=None, ge=0, le=86400)


class Invite(BaseModel):
    """A reader the admin signs up (token-only studies)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)


def reader_name(text: str | None) -> str:
    """A display name: stripped, 1-64 printable characters; HTTP 400 otherwise."""
    name = " ".join((text or "").split())
    if not 1 <= len(name) <= 64 or any(unicodedata.category(ch).startswith("C") for ch in name):
        raise HTTPException(400, "Enter your name (1 to 64 characters).")
    return name


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def static_files() -> dict[str, bytes]:
    """The page's files, read once from the package."""
    folder = resources.files("benchmarks.reader_study") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def create_app(study: Study, store: Store, settings: Settings) -> FastAPI:
    """The app for one study."""
    app = FastAPI(title="Reader study", docs_url=None, redoc_url=None, openapi_url=None)
    files = static_files()
    cases = {case.id: case for case in study.cases}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def current_reader(request: Request) -> Reader:
        token = bearer(request) or request.cookies.get(COOKIE)
        reader = store.reader_by_token(token) if token else None
        if reader is None:
            raise HTTPException(401, "Not signed in.")
        return reader

    def admin(request: Request) -> None:
        token = bearer(request) or ""
        if not settings.admin_token or not secrets.compare_digest(token.encode(), settings.admin_token.encode()):
            raise HTTPException(401, "The admin token is needed.")

    def signed_in(reader: Reader, token: str) -> JSONResponse:
        response = JSONResponse({"name": reader.name, "token": token})
        response.set_cookie(COOKIE, token, max_age=COOKIE_DAYS * 86400, httponly=True, samesite="strict",
                            secure=settings.secure_cookie)
        return response

    def page(name: str) -> Response:
        return Response(files[name], media_type=STATIC[name])

    def task_view(task: Task, likert: dict, preferences: dict) -> dict:
        case = cases[task.case_id]
        images = [{window: f"/img/{case.images[arm][window]}.png" for window in case.windows} for arm in task.arms]
        if task.kind == LIKERT:
            answers = dict(likert.get((task.case_id, task.arms[0]), {}))
        else:
            choice = preferences.get((task.case_id, *task.pair))
            answers = {} if choice is None else {PREFERENCE: "equal" if choice == EQUAL else
                                                 "left" if choice == task.arms[0] else "right"}
        return {"kind": task.kind, "windows": list(case.windows), "images": images, "answers": answers}

    def is_done(task: dict) -> bool:
        wanted = ITEM_KEYS if task["kind"] == LIKERT else (PREFERENCE,)
        return all(key in task["answers"] for key in wanted)

    def progress(reader: Reader) -> tuple[list[dict], int]:
        likert, preferences = store.likert_of(reader.id), store.preferences_of(reader.id)
        views = [task_view(task, likert, preferences) for task in reader_tasks(study, reader.name)]
        return views, sum(is_done(view) for view in views)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return page("index.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> Response:
        return page("admin.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "Not found.")
        return page(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz")
    def health() -> dict:
        return {"ok": True}

    @app.post("/api/signin")
    def signin(body: SignIn) -> JSONResponse:
        if body.token:
            reader = store.reader_by_token(body.token.strip())
            if reader is None:
                raise HTTPException(401, "This code is not known. Check it, or ask the study coordinator.")
            return signed_in(reader, body.token.strip())
        if not settings.name_signin:
            raise HTTPException(403, "Sign in with the code the study coordinator gave you.")
        try:
            reader, token = store.add_reader(reader_name(body.name))
        except NameTaken:
            raise HTTPException(409, "This name is taken. If it is yours, sign in with your personal code.") from None
        return signed_in(reader, token)

    @app.post("/api/signout")
    def signout() -> JSONResponse:
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=settings.secure_cookie)
        return response

    @app.get("/api/tasks")
    def tasks(reader: Reader = Depends(current_reader)) -> dict:
        views, done = progress(reader)
        return {"reader": reader.name, "items": study.items, "scale": list(SCALE),
                "question": study.preference_question, "tasks": views, "done": done, "total": len(views)}

    @app.post("/api/answer")
    def answer(body: Answer, reader: Reader = Depends(current_reader)) -> dict:
        schedule = reader_tasks(study, reader.name)
        if body.task >= len(schedule):
            raise HTTPException(404, "No such task.")
        task = schedule[body.task]
        if task.kind == LIKERT:
            if body.item not in ITEM_KEYS or not isinstance(body.value, int) or body.value not in SCALE:
                raise HTTPException(422, "A score is an item of this task and a whole number from 1 to 5.")
            store.save_likert(reader.id, task.case_id, task.arms[0], body.item, body.value, body.seconds)
        elif task.kind == AB:
            if body.item != PREFERENCE or body.value not in PREFERENCE_CHOICES:
                raise HTTPException(422, "A preference is left, equal or right.")
            choice = {"left": task.arms[0], "right": task.arms[1]}.get(str(body.value), EQUAL)
            store.save_preference(reader.id, task.case_id, task.pair, task.arms[0], choice, body.seconds)
        views, done = progress(reader)
        return {"saved": True, "task_done": is_done(views[body.task]), "done": done, "total": len(views)}

    @app.get("/img/{name}")
    def image(name: str, reader: Reader = Depends(current_reader)) -> Response:
        path = study.image_path(name.removesuffix(".png")) if name.endswith(".png") else None
        if path is None or not path.is_file():
            raise HTTPException(404, "Not found.")
        return Response(path.read_bytes(), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/admin/progress", dependencies=[Depends(admin)])
    def admin_progress() -> dict:
        rows = []
        for reader in store.readers():
            views, done = progress(reader)
            rows.append({"name": reader.name, "done": done, "total": len(views), "signed_up": reader.created,
                         "last_answer": store.last_answer(reader.id)})
        return {"readers": rows, "cases": len(study.cases), "arms": len(study.arms)}

    @app.post("/api/admin/readers", dependencies=[Depends(admin)])
    def invite(body: Invite) -> dict:
        try:
            reader, token = store.add_reader(reader_name(body.name), invited=True)
        except NameTaken:
            raise HTTPException(409, "A reader of this name exists.") from None
        return {"name": reader.name, "token": token}

    return app
