"""The FastAPI application: ``create_app(ctx)`` wires the routes, the error handlers and the
static files; ``mrimaster serve`` builds the context at start-up and runs it with uvicorn."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrimaster.errors import MRIMasterError
from mrimaster.serving import routes_api, routes_pages
from mrimaster.serving.accounts import AuthError
from mrimaster.serving.cases import error_status
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import COOKIE, CsrfFailed, Forbidden, NotLoggedIn, session_token
from mrimaster.serving.security import token_hash
from mrimaster.storage import repository as repo

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _message(status: int, message: str, hint: str | None = None) -> JSONResponse:
    body = {"error": message} | ({"hint": hint} if hint else {})
    return JSONResponse(body, status_code=status)


class BodyTooLarge(HTTPException):
    """A request body went past the upload limit while it streamed in (an HTTPException, so
    that FastAPI's body parsing passes it on instead of answering "error parsing the body")."""

    def __init__(self) -> None:
        super().__init__(413, "the upload is larger than the limit")


class UploadGuard:
    """Pure ASGI middleware in front of every route.

    - Security headers on every answer (no framing by other sites, no content sniffing).
    - A request with a body (POST) from a caller who is not logged in is refused before its
      body is read (FastAPI parses a form before the route's log-in check runs, so without
      this anyone could fill the disk with uploads); the log-in routes are the exception.
    - A body over the upload limit is refused: at once when its declared length is, and as soon
      as it streams past the limit otherwise (chunked uploads).
    """

    OPEN = ("/login", "/api/auth/token")
    HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
               (b"content-security-policy", b"frame-ancestors 'none'"),
               (b"referrer-policy", b"same-origin")]

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        limit = self.ctx.config.max_upload_bytes + 1024 * 1024  # the form's other fields
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if scope["method"] == "POST" and scope["path"] not in self.OPEN:
            if not await anyio.to_thread.run_sync(self._logged_in, headers):
                path = scope["path"]
                response: Response = (
                    _message(401, "not logged in", "POST /api/auth/token for a bearer token")
                    if path.startswith("/api/") else RedirectResponse("/login", 303))
                await response(scope, receive, send_with_headers)
                return
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                await _too_large(self.ctx)(scope, receive, send_with_headers)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send_with_headers)

    def _logged_in(self, headers: dict[str, str]) -> bool:
        jar: SimpleCookie = SimpleCookie()
        jar.load(headers.get("cookie", ""))
        token, kind = session_token(headers.get("authorization", ""),
                                    jar[COOKIE].value if COOKIE in jar else "")
        if not token:
            return False
        with self.ctx.sessions() as db:
            return repo.get_session(db, token_hash(token), kind) is not None


def _too_large(ctx: AppContext) -> JSONResponse:
    limit = ctx.config.max_upload_bytes
    return _message(413, f"the upload is larger than the limit of {limit / 1e6:.0f} MB",
                    "upload a smaller file, or raise MRIMASTER_MAX_UPLOAD_MB")


def create_app(ctx: AppContext) -> FastAPI:
    """The web app over an opened :class:`AppContext`."""
    app = FastAPI(title="MRIMaster", version="1", summary="Brain-MRI assistant: worklist, AI "
                  "reads with their evidence and uncertainty, doctors' review",
                  docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.ctx = ctx
    app.add_middleware(UploadGuard, ctx=ctx)
    app.include_router(routes_api.router)
    app.include_router(routes_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(BodyTooLarge)
    def body_too_large(_request: Request, _exc: BodyTooLarge) -> Response:
        return _too_large(ctx)

    @app.exception_handler(NotLoggedIn)
    def not_logged_in(request: Request, _exc: NotLoggedIn) -> Response:
        if _is_api(request):
            return _message(401, "not logged in", "POST /api/auth/token for a bearer token")
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(Forbidden)
    def forbidden(_request: Request, _exc: Forbidden) -> Response:
        return _message(403, "your role does not allow this", "ask an admin")

    @app.exception_handler(CsrfFailed)
    def csrf_failed(_request: Request, _exc: CsrfFailed) -> Response:
        return _message(403, "missing or wrong CSRF token",
                        "reload the page and submit again (API: send X-CSRF-Token)")

    @app.exception_handler(AuthError)
    def auth_failed(_request: Request, exc: AuthError) -> Response:
        response = _message(429 if exc.retry_after else 401, exc.message, exc.hint)
        if exc.retry_after:
            response.headers["Retry-After"] = str(int(exc.retry_after))
        return response

    @app.exception_handler(MRIMasterError)
    def refused(_request: Request, exc: MRIMasterError) -> Response:
        return _message(error_status(exc), exc.message, exc.hint)

    @app.exception_handler(Exception)
    def crashed(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return _message(500, f"the server failed ({type(exc).__name__}); nothing was changed",
                        "try again; if it persists, tell the administrator (see the log)")

    return app
