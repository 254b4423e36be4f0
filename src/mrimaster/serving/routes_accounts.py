"""Account routes, API and pages: change your password, your sessions and "log out
everywhere" (``/api/me/...``, ``/account``); an admin's password reset and deactivation
(``/api/users/{name}/...``, ``/admin/users/{name}/...``). Thin: the rules live in
:mod:`mrimaster.serving.accounts`. Changes by cookie need the session's CSRF token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Form, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.serving import accounts
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import (
    COOKIE,
    Auth,
    PasswordChangeDue,
    check_csrf,
    get_auth,
    get_ctx,
    get_db,
    require_admin,
)
from mrimaster.serving.routes_pages import page
from mrimaster.serving.views import user_view
from mrimaster.storage import repository as repo

router = APIRouter(tags=["accounts"])
NO_STORE = {"Cache-Control": "no-store"}
"""A one-time password is shown once: never cached (ASVS V8.2.1)."""
CHANGE_FIRST = ("change your password first",
                "your password is a one-time password: POST /api/me/password with "
                "current_password and new_password (pages: /account)")


def install(app: FastAPI) -> None:
    """Add the account routes to ``app`` and the answer to a route used while a password
    change is due: 403 for the API, a redirect to the account page for pages."""
    app.include_router(router)

    @app.exception_handler(PasswordChangeDue)
    def change_due(request: Request, _exc: PasswordChangeDue) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": CHANGE_FIRST[0], "hint": CHANGE_FIRST[1]}, 403)
        return RedirectResponse("/account", status_code=303)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


def _session_rows(ctx: AppContext, db: Session, auth: Auth) -> list[dict[str, Any]]:
    idle = timedelta(minutes=ctx.config.idle_minutes)
    return [{"kind": s.kind, "created_at": s.created_at.isoformat(),
             "last_seen_at": s.last_seen_at.isoformat(), "expires_at": s.expires_at.isoformat(),
             "current": s.current} for s in accounts.my_sessions(db, auth.user, auth.token, idle)]


# --- API ------------------------------------------------------------------------------------

@router.post("/api/me/password", summary="Change your password (ends your other sessions)")
def change_password(body: PasswordChange, auth: Auth = Depends(get_auth),
                    ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db),
                    x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    check_csrf(auth, x_csrf_token)
    ended = accounts.change_password(ctx, db, auth.user, body.current_password,
                                     body.new_password, auth.token)
    return {"changed": True, "other_sessions_ended": ended}


@router.get("/api/me/sessions", summary="Your sessions and API tokens (never their secrets)")
def my_sessions(auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
                db: Session = Depends(get_db)) -> list[dict[str, Any]]:
    return _session_rows(ctx, db, auth)


@router.post("/api/me/sessions/logout-all",
             summary="Log out everywhere: all your sessions, or all but this one (others=true)")
def logout_all(others: bool = False, auth: Auth = Depends(get_auth),
               db: Session = Depends(get_db),
               x_csrf_token: str | None = Header(default=None)) -> dict[str, int]:
    check_csrf(auth, x_csrf_token)
    return {"ended": accounts.log_out_everywhere(db, auth.user, auth.token, others)}


@router.post("/api/users/{name}/reset-password",
             summary="Give an account a one-time password, shown once (admins only)")
def reset_password(name: str, auth: Auth = Depends(require_admin),
                   db: Session = Depends(get_db),
                   x_csrf_token: str | None = Header(default=None)) -> JSONResponse:
    check_csrf(auth, x_csrf_token)
    password = accounts.reset_password(db, auth.user, name)
    return JSONResponse({"username": name.strip().lower(), "one_time_password": password,
                         "hint": "give it to its owner privately; they must change it at "
                         "their next log-in"}, headers=NO_STORE)


@router.post("/api/users/{name}/deactivate",
             summary="Deactivate an account: no log-in, its sessions end (admins only)")
def deactivate(name: str, auth: Auth = Depends(require_admin), db: Session = Depends(get_db),
               x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    check_csrf(auth, x_csrf_token)
    return user_view(accounts.set_active(db, auth.user, name, False))


@router.post("/api/users/{name}/reactivate", summary="Reactivate an account (admins only)")
def reactivate(name: str, auth: Auth = Depends(require_admin), db: Session = Depends(get_db),
               x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    check_csrf(auth, x_csrf_token)
    return user_view(accounts.set_active(db, auth.user, name, True))


# --- pages ----------------------------------------------------------------------------------

def _account_page(request: Request, auth: Auth, db: Session, code: int = 200,
                  **extra: Any) -> HTMLResponse:
    ctx: AppContext = request.app.state.ctx
    return page(request, "account.html", auth, code, sessions=_session_rows(ctx, db, auth),
                due=auth.user.must_change_password, **extra)


@router.get("/account", response_class=HTMLResponse, summary="My account page")
def account_page(request: Request, changed: bool = False, auth: Auth = Depends(get_auth),
                 db: Session = Depends(get_db)) -> HTMLResponse:
    return _account_page(request, auth, db, notice="Your password was changed." if changed
                         else "")


@router.post("/account/password", summary="Change your password (form)")
def change_password_form(request: Request, current: str = Form(default=""),
                         password: str = Form(default=""), confirm: str = Form(default=""),
                         csrf: str = Form(default=""), auth: Auth = Depends(get_auth),
                         ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
                         ) -> Response:
    check_csrf(auth, csrf)
    try:
        if password != confirm:
            raise MRIMasterError("the two new passwords differ", "type the same one twice")
        accounts.change_password(ctx, db, auth.user, current, password, auth.token)
    except accounts.AuthError as exc:
        db.rollback()
        return _account_page(request, auth, db, 429, error=str(exc).replace("\n  hint:", ";"))
    except MRIMasterError as exc:
        db.rollback()
        return _account_page(request, auth, db, 422, error=str(exc).replace("\n  hint:", ";"))
    return RedirectResponse("/account?changed=1", status_code=303)


@router.post("/account/sessions/logout-all", summary="Log out everywhere (form)")
def logout_all_form(scope: str = Form(default="all"), csrf: str = Form(default=""),
                    auth: Auth = Depends(get_auth), db: Session = Depends(get_db)) -> Response:
    check_csrf(auth, csrf)
    others = scope == "others"
    accounts.log_out_everywhere(db, auth.user, auth.token, others)
    if others:
        return RedirectResponse("/account", status_code=303)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _users_page(request: Request, auth: Auth, db: Session, code: int = 200,
                **extra: Any) -> HTMLResponse:
    return page(request, "users.html", auth, code, users=repo.list_users(db), **extra)


@router.post("/admin/users/{name}/reset-password", summary="Reset a password (form, admins)")
def reset_password_form(request: Request, name: str, csrf: str = Form(default=""),
                        auth: Auth = Depends(require_admin), db: Session = Depends(get_db)
                        ) -> Response:
    check_csrf(auth, csrf)
    try:
        password = accounts.reset_password(db, auth.user, name)
    except MRIMasterError as exc:
        db.rollback()
        return _users_page(request, auth, db, 422, error=str(exc))
    response = _users_page(request, auth, db, one_time={"username": name.strip().lower(),
                                                         "password": password})
    response.headers.update(NO_STORE)
    return response


@router.post("/admin/users/{name}/{action}", summary="Deactivate or reactivate (form, admins)")
def set_active_form(request: Request, name: str, action: str, csrf: str = Form(default=""),
                    auth: Auth = Depends(require_admin), db: Session = Depends(get_db)
                    ) -> Response:
    check_csrf(auth, csrf)
    if action not in ("deactivate", "reactivate"):
        return _users_page(request, auth, db, 404, error=f"unknown action {action!r}")
    try:
        accounts.set_active(db, auth.user, name, action == "reactivate")
    except MRIMasterError as exc:
        db.rollback()
        return _users_page(request, auth, db, 422, error=str(exc))
    return RedirectResponse("/admin/users", status_code=303)
