"""The FastAPI application: ``create_app(ctx)`` wires the routes, the error handlers and the
static files; ``mrimaster serve`` builds the context at start-up and runs it with uvicorn."""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrimaster.errors import MRIMasterError
from mrimaster.serving import (
    routes_accounts,
    routes_api,
    routes_masks,
    routes_pacs,
    routes_pages,
)
from mrimaster.serving.accounts import AuthError
from mrimaster.serving.cases import error_status, hide_folders
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


TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
          409: "Not possible now", 413: "Too large", 415: "Not a supported file",
          422: "Not accepted", 500: "The server failed"}


def _answer(request: Request, status: int, message: str, hint: str | None = None) -> Response:
    """An error as the asker reads it: a page for a browser asking for a page (a person),
    else the API's ``{"error", "hint"}`` JSON."""
    if _is_api(request) or "text/html" not in request.headers.get("accept", ""):
        return _message(status, message, hint)
    from mrimaster.serving.routes_pages import templates

    return templates.TemplateResponse(
        request, "error.html", {"auth": None, "status": status, "message": message,
                                "hint": hint, "title": TITLES.get(status, "Error")},
        status_code=status)


class BodyTooLarge(HTTPException):
    """A request body went past the upload limit while it streamed in (an HTTPException, so
    that FastAPI's body parsing passes it on instead of answering "error parsing the body")."""

    def __init__(self) -> None:
        super().__init__(413, "the upload is larger than the limit")


# Content-Security-Policy (CSP Level 3; OWASP ASVS 4.0.3 V14.4.3, and V5.3.3's output encoding
# gets a second line of defence: an injected <script> or on*= handler does not run). Everything
# comes from the app's own origin: no inline script or style attribute, no eval, no plug-ins, no
# other host (the JavaScript is vendored from npm, see web/). The additions are the least that
# the vendored libraries need, found by running the pages in chromium and collecting the
# violation reports (tests/serving/test_browser.py fails on any):
CSP_BASE = (
    "default-src 'self'",
    # data: images, for both vendored libraries (checked in chromium, without it):
    # - NiiVue loads its default font glyph sheet (PNG) and matcap (JPEG) from data: URLs in its
    #   bundle; blocked, the font texture fails ("Refused to load the image 'data:image/png..."),
    #   loadVolumes() rejects and the 3D viewer draws nothing.
    # - Swagger UI's stylesheet draws its icons (arrows, locks, copy buttons) as data: SVGs.
    # Nothing else was reported: NiiVue 0.69 needs no blob: worker or 'wasm-unsafe-eval' for the
    # NIfTI volumes the app shows (its WebAssembly decoders are for other formats), and the
    # styles Swagger UI and NiiVue set from script go through the CSSOM, which style-src
    # does not restrict, so no 'unsafe-inline' either.
    "img-src 'self' data:",
    "object-src 'none'",  # no <object>/<embed> plug-ins
    "base-uri 'self'",  # an injected <base href> cannot re-point the relative script URLs
    "form-action 'self'",  # an injected form cannot post the page's fields elsewhere
    "frame-ancestors 'none'",  # no framing by any site (clickjacking; with X-Frame-Options)
)
CSP = "; ".join(CSP_BASE)
# Features the app never uses, off for its pages and anything they could embed (each name one
# that Chromium knows: an unknown one is reported as an error in the console)
PERMISSIONS_POLICY = ", ".join(f"{feature}=()" for feature in (
    "accelerometer", "autoplay", "camera", "display-capture", "geolocation",
    "gyroscope", "hid", "magnetometer", "microphone", "midi", "payment", "serial", "usb",
    "screen-wake-lock", "xr-spatial-tracking"))
HSTS = "max-age=31536000; includeSubDomains"
UNCACHED_EXCEPT = ("/static/", "/healthz")


def security_headers(path: str, https: bool) -> list[tuple[bytes, bytes]]:
    """The security headers of an answer to ``path`` (OWASP ASVS 4.0.3 V14.4, V8.2.1).

    - ``Content-Security-Policy``: :data:`CSP` (V14.4.3).
    - ``Cache-Control: no-store`` on everything but the static assets and the health check:
      pages, API answers and case files carry patient data, which must not stay in a shared
      workstation's browser cache after log-out (V8.2.1; V14.4.x).
    - ``Strict-Transport-Security`` when the app runs behind TLS (secure cookies on; V14.4.5).
    - ``X-Content-Type-Options: nosniff`` (V14.4.4), ``X-Frame-Options: DENY`` for browsers
      without CSP ``frame-ancestors`` (V14.4.7).
    - ``Referrer-Policy: same-origin`` (V14.4.6): no URL (with its case number) goes to
      another origin. Not ``no-referrer``: under it browsers send ``Origin: null`` on the
      app's own form posts, which would defeat an Origin check against CSRF (V13.2.3, OWASP
      CSRF cheat sheet); same-origin Referers reach only this server, which has the data anyway.
    - ``Permissions-Policy``: camera, microphone, geolocation and the other powerful features
      the app never uses are off, for the page and anything it could embed.
    - ``Cross-Origin-Opener-Policy: same-origin``: a page this one opens, or that opened it,
      from another origin gets no handle on its window (cross-window attacks, XS-Leaks).
    """
    headers = [(b"content-security-policy", CSP.encode()),
               (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"same-origin"),
               (b"permissions-policy", PERMISSIONS_POLICY.encode()),
               (b"cross-origin-opener-policy", b"same-origin")]
    if not path.startswith(UNCACHED_EXCEPT):
        headers.append((b"cache-control", b"no-store"))
    if https:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


class UploadGuard:
    """Pure ASGI middleware in front of every route.

    - Security headers on every answer, error answers included (:func:`security_headers`);
      headers of the same names that a route set are replaced, so that a route cannot loosen
      them (a case file's ``Cache-Control``, for one).
    - A request with a body (POST) from a caller who is not logged in is refused before its
      body is read (FastAPI parses a form before the route's log-in check runs, so without
      this anyone could fill the disk with uploads); the log-in routes are the exception.
    - A body over the upload limit is refused: at once when its declared length is, and as soon
      as it streams past the limit otherwise (chunked uploads).
    """

    OPEN = ("/login", "/api/auth/token")

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = security_headers(scope["path"], self.ctx.config.cookie_secure)
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*((k, v) for k, v in message.get("headers", [])
                                        if k.lower() not in names), *extra]
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
        idle = timedelta(minutes=self.ctx.config.idle_minutes)
        with self.ctx.sessions() as db:  # the same absolute and idle limits as the routes
            return repo.get_session(db, token_hash(token), kind, idle=idle) is not None


def _too_large(ctx: AppContext) -> JSONResponse:
    limit = ctx.config.max_upload_bytes
    return _message(413, f"the upload is larger than the limit of {limit / 1e6:.0f} MB",
                    "upload a smaller file, or raise MRIMASTER_MAX_UPLOAD_MB")


# The API docs page: Swagger UI from static/vendor (web/copy-vendor.cjs), started by
# static/api-docs.js, since FastAPI's get_swagger_ui_html() starts it with an inline <script>
# that the CSP blocks.
API_DOCS = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MRIMaster API</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui.css">
<link rel="icon" type="image/png" href="/static/vendor/swagger-ui-favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="/api/openapi.json"></div>
<script src="/static/vendor/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""
API_DOCS_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MRIMaster API</title></head>
<body><p>The API docs viewer (Swagger UI) is not installed on this server: run
<code>npm ci --prefix web</code> where MRIMaster is installed. The API's description is at
<a href="/api/openapi.json">/api/openapi.json</a>.</p></body></html>
"""


def create_app(ctx: AppContext) -> FastAPI:
    """The web app over an opened :class:`AppContext`."""
    app = FastAPI(title="MRIMaster", version="1", summary="Brain-MRI assistant: worklist, AI "
                  "reads with their evidence and uncertainty, doctors' review",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.ctx = ctx
    app.add_middleware(UploadGuard, ctx=ctx)
    app.include_router(routes_api.router)
    app.include_router(routes_pages.router)
    app.include_router(routes_masks.router)
    app.include_router(routes_pacs.router)
    routes_accounts.install(app)  # account routes, and the forced password change
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/docs", include_in_schema=False, response_class=HTMLResponse)
    def api_docs() -> HTMLResponse:
        """The API's interactive documentation (Swagger UI), open to anyone who reaches the app,
        as FastAPI's default was: it documents the API and shows no patient data (calling an
        operation from it needs a token or the session); API clients read it before they have
        a token. Served from the app's own files (vendored by ``npm ci --prefix web``), so it
        works without internet and runs no other host's script on this origin."""
        if not (STATIC / "vendor" / "swagger-ui-bundle.js").is_file():
            return HTMLResponse(API_DOCS_MISSING, status_code=503)
        return HTMLResponse(API_DOCS)

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
    def forbidden(request: Request, _exc: Forbidden) -> Response:
        return _answer(request, 403, "your role does not allow this", "ask an admin")

    @app.exception_handler(CsrfFailed)
    def csrf_failed(request: Request, _exc: CsrfFailed) -> Response:
        return _answer(request, 403, "missing or wrong CSRF token",
                       "reload the page and submit again (API: send X-CSRF-Token)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request) or "text/html" not in request.headers.get("accept", ""):
            return await http_exception_handler(request, exc)  # FastAPI's own answer
        return _answer(request, exc.status_code, "there is no such page"
                       if exc.status_code == 404 else str(exc.detail),
                       "check the address, or start from the worklist")

    @app.exception_handler(AuthError)
    def auth_failed(_request: Request, exc: AuthError) -> Response:
        response = _message(429 if exc.retry_after else 401, exc.message, exc.hint)
        if exc.retry_after:
            response.headers["Retry-After"] = str(int(exc.retry_after))
        return response

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> Response:
        # the app's own {"error", "hint"} shape, never echoing the input: a NaN could not even
        # be written as JSON (a 500), and a value sent may be a password
        fields = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        said = "; ".join(f"{'.'.join(str(x) for x in f['loc'][1:]) or 'body'}: {f['msg']}"
                         for f in fields[:5])
        if not _is_api(request) and "text/html" in request.headers.get("accept", ""):
            return _answer(request, 422 if request.method != "GET" else 404,
                           f"invalid request: {said}", "check the address or the form")
        return JSONResponse({"error": f"invalid request: {said}", "hint": "see /api/docs for "
                             "the fields this request takes", "detail": fields},
                            status_code=422)

    @app.exception_handler(MRIMasterError)
    def refused(request: Request, exc: MRIMasterError) -> Response:
        # a refusal may quote a file the server read: never show where the server keeps it
        # (only these folders: hints name API paths such as /api/auth/token on purpose)
        roots = (ctx.config.app_dir.resolve(), ctx.config.app_dir, tempfile.gettempdir())
        return _answer(request, error_status(exc), hide_folders(exc.message, *roots),
                       hide_folders(exc.hint, *roots) if exc.hint else None)

    @app.exception_handler(Exception)
    def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        response = _message(500, f"the server failed ({type(exc).__name__}); nothing was "
                            "changed", "try again; if it persists, tell the administrator "
                            "(see the log)")
        # Starlette answers an unhandled exception from its outermost middleware, outside
        # UploadGuard: the security headers are added here
        for name, value in security_headers(request.url.path, ctx.config.cookie_secure):
            response.headers[name.decode()] = value.decode()
        return response

    return app
