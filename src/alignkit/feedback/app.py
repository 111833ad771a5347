"""The feedback web app: a JSON API for annotators and admins, plus a static front end.

``create_app(db_url, per_item=..., lease_minutes=...)`` builds the FastAPI application; the CLI's
``serve`` runs it under uvicorn. Design choices and why:

* **Bearer tokens, not cookies.** The front end keeps the annotator's token in
  ``localStorage`` and sends ``Authorization: Bearer``; with no cookie there is no cross-site
  request forgery to defend against. Missing or unknown tokens get 401, a non-admin on an
  admin route 403, another annotator's annotation 404 (its existence is not revealed).
* **Synchronous handlers.** SQLAlchemy's engine is synchronous; FastAPI runs ``def`` handlers
  in its thread pool, and the store serialises what must be serialised.
* **Replies after commit.** ``PUT /api/annotations/{id}`` answers only once the ranking is
  committed; a client that lost the reply may resend the same body and is told
  ``duplicate: true``.
* **A strict Content-Security-Policy** (scripts and styles from this origin only, no inline
  script) backs up the front end's rule of rendering data with ``textContent``: even a
  rendering bug could not run a ``<script>`` hidden in a prompt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from alignkit.feedback.importer import MAX_RESPONSES
from alignkit.feedback.store import (
    AnnotationView,
    AnnotatorInfo,
    ConflictError,
    FeedbackStore,
    InvalidRankingError,
    NotFoundError,
)

STATIC_DIR = FilePath(__file__).resolve().parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SubmitBody(BaseModel):
    """A ranking: response indices best first, and optional per-response safety labels."""

    model_config = ConfigDict(extra="forbid")

    ranking: list[StrictInt] = Field(min_length=2, max_length=MAX_RESPONSES)
    safe: list[StrictBool] | None = Field(default=None, max_length=MAX_RESPONSES)


_bearer = HTTPBearer(auto_error=False)


def current_annotator(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AnnotatorInfo:
    """The annotator whose token is in the Authorization header, or 401."""
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid token: sign in with the token from add-annotator",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if creds is None or creds.scheme.lower() != "bearer":
        raise unauthorized
    store: FeedbackStore = request.app.state.store
    who = store.authenticate(creds.credentials)
    if who is None:
        raise unauthorized
    return who


Who = Annotated[AnnotatorInfo, Depends(current_annotator)]


def current_admin(who: Who) -> AnnotatorInfo:
    """The signed-in annotator if they are an admin, else 403."""
    if not who.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admin token required")
    return who


Admin = Annotated[AnnotatorInfo, Depends(current_admin)]

# Ids are 32-bit integer columns: a larger number is a client error (422), not a database
# overflow (500) on PostgreSQL.
AnnotationId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _annotation_json(view: AnnotationView) -> dict[str, Any]:
    return {
        "annotation_id": view.id,
        "status": view.status,
        "item": {"id": view.item.id, "prompt": view.item.prompt, "responses": view.item.responses},
        "ranking": view.ranking,
        "safe": view.safe,
        "assigned_at": view.assigned_at.isoformat() + "Z",
        "completed_at": view.completed_at.isoformat() + "Z" if view.completed_at else None,
    }


def create_app(
    db_url: str | FilePath,
    *,
    per_item: int = 1,
    lease_minutes: float = 30.0,
    store: FeedbackStore | None = None,
) -> FastAPI:
    """Build the app over ``db_url`` (migrated on creation, so schema errors surface early).

    ``per_item`` annotators rank each item; an unfinished assignment frees its slot after
    ``lease_minutes``. Pass ``store`` to share an already open store (tests do).
    """
    feedback = store or FeedbackStore(
        db_url, per_item=per_item, lease=timedelta(minutes=lease_minutes)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if store is None:
            feedback.close()

    app = FastAPI(
        title="alignkit feedback",
        summary="Rank model responses; stored for reward, cost and preference training.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = feedback

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(NotFoundError)
    async def _not_found(_r: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(ConflictError)
    async def _conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(InvalidRankingError)
    async def _invalid(_r: Request, exc: InvalidRankingError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    def me(who: Who) -> dict[str, Any]:
        """Who the token belongs to, and their progress."""
        return {
            "name": who.name,
            "is_admin": who.is_admin,
            "progress": asdict(feedback.progress(who)),
            "per_item": feedback.per_item,
        }

    @app.post("/api/next")
    def next_item(who: Who) -> dict[str, Any]:
        """The caller's open assignment or a newly claimed item (``annotation: null`` if done)."""
        view = feedback.next_assignment(who)
        return {
            "annotation": _annotation_json(view) if view else None,
            "progress": asdict(feedback.progress(who)),
        }

    @app.get("/api/annotations")
    def my_annotations(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> dict[str, Any]:
        """The caller's own finished annotations, newest first."""
        views = feedback.list_annotations(who, limit=limit, offset=offset)
        return {"annotations": [_annotation_json(v) for v in views]}

    @app.get("/api/annotations/{annotation_id}")
    def get_annotation(annotation_id: AnnotationId, who: Who) -> dict[str, Any]:
        return _annotation_json(feedback.get_annotation(who, annotation_id))

    @app.put("/api/annotations/{annotation_id}")
    def submit(annotation_id: AnnotationId, body: SubmitBody, who: Who) -> dict[str, Any]:
        """Store a ranking; the reply is sent only after the commit."""
        result = feedback.submit(who, annotation_id, body.ranking, body.safe)
        return {**asdict(result), "progress": asdict(feedback.progress(who))}

    @app.post("/api/annotations/{annotation_id}/skip")
    def skip(annotation_id: AnnotationId, who: Who) -> dict[str, Any]:
        result = feedback.skip(who, annotation_id)
        return {**asdict(result), "progress": asdict(feedback.progress(who))}

    @app.get("/api/admin/stats")
    def admin_stats(_who: Admin) -> dict[str, Any]:
        """Counts, per-annotator lines and inter-annotator agreement."""
        return asdict(feedback.stats())

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "admin.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
