"""The FastAPI application: ``create_app(ctx)`` wires the routes, the error handlers and the
static files; ``mrimaster serve`` builds the context at start-up and runs it with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from mrimaster.errors import MRIMasterError
from mrimaster.serving import routes_api, routes_pages
from mrimaster.serving.accounts import AuthError
from mrimaster.serving.cases import error_status
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import CsrfFailed, Forbidden, NotLoggedIn

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _message(status: int, message: str, hint: str | None = None) -> JSONResponse:
    body = {"error": message} | ({"hint": hint} if hint else {})
    return JSONResponse(body, status_code=status)


class SizeLimit(BaseHTTPMiddleware):
    """Refuse a request whose declared body is over the upload limit before reading it."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        limit = request.app.state.ctx.config.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + 1024 * 1024:
            return _message(413, f"the upload is larger than the limit of {limit / 1e6:.0f} MB",
                            "upload a smaller file, or raise MRIMASTER_MAX_UPLOAD_MB")
        return await call_next(request)


def create_app(ctx: AppContext) -> FastAPI:
    """The web app over an opened :class:`AppContext`."""
    app = FastAPI(title="MRIMaster", version="1", summary="Brain-MRI assistant: worklist, AI "
                  "reads with their evidence and uncertainty, doctors' review",
                  docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.ctx = ctx
    app.add_middleware(SizeLimit)
    app.include_router(routes_api.router)
    app.include_router(routes_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

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
