"""Who may see the dashboard: sign-in with an API key kept only as an HMAC in the signed session cookie, the
session's lifetimes and sign-outs (in every server process), and the CSRF token every form posts back."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask, Response, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import BadRequest

from worker.api.auth import key_failures, key_matches
from worker.api.context import context
from worker.api.dashboard.blueprint import bp
from worker.settings import Settings

log = logging.getLogger(__name__)

SESSION_HOURS = 12  # the longest a session lasts, however busy
SESSION_IDLE_MINUTES = 30  # a session without a page for longer is over

_FINGERPRINTS = "dashboard_key_fingerprints"
_SESSION_KEY = "key"  # the HMAC of the key the session signed in with, never the key
_SESSION_CSRF = "csrf"
_SESSION_SINCE = "since"  # when it signed in, whole seconds by the app's clock
_SESSION_SEEN = "seen"  # its latest page, likewise: moved on every page, so idle time counts from the last one
# A signed cookie cannot be recalled, and every server process must refuse it once its holder signs out, so the
# store's meta keeps a sign-out mark per key: a random value, replaced by a fresh one at every sign-out with that
# key. A session carries the mark its key had when it signed in and is over once the stored mark differs. Each
# write is a new random value, so no write, however late or concurrent, brings back an old mark or the sessions
# under it: no lock and no list to prune, one meta row per key, one read per page and one write per sign-out.
# The price: signing out ends every session of that key, in every browser.
_SESSION_SIGN_OUT = "sign_out"  # its key's sign-out mark when it signed in
_PUBLIC_ENDPOINTS = ("dashboard.signin",)


def fingerprint(secret: bytes, key: str) -> str:
    """What a session keeps of the key it signed in with: useless without the secret, and no way back to the key."""
    return hmac.new(secret, b"dashboard-key\0" + key.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Fingerprints:
    """Fingerprints of the configured keys: what a signed-in session is compared against on every request."""

    secret: bytes
    read: tuple[str, ...]
    write: tuple[str, ...]

    def of(self, key: str) -> str:
        return fingerprint(self.secret, key)


def install_dashboard_session(app: Flask, settings: Settings) -> None:
    """The session cookie the dashboard signs in with: signed, HttpOnly, SameSite=Lax, and Secure unless
    DASHBOARD_INSECURE_COOKIE=true (for plain-HTTP tests). A session ends at sign-out (in every server process), after
    SESSION_IDLE_MINUTES without a page and SESSION_HOURS after sign-in."""
    secret = session_secret(settings)
    app.secret_key = secret
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.dashboard_insecure_cookie,
        # The cookie lapses after the idle time by the wall clock too; _session_over decides by the app's clock.
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=SESSION_IDLE_MINUTES),
    )
    read_keys = dict.fromkeys(settings.api_keys + settings.admin_api_keys)
    app.extensions[_FINGERPRINTS] = _Fingerprints(secret, tuple(fingerprint(secret, key) for key in read_keys),
                                                  tuple(fingerprint(secret, key) for key in settings.write_keys))


def session_secret(settings: Settings) -> bytes:
    """SESSION_SECRET, else an HMAC of all the API keys: every server process derives the same secret, and
    changing any key signs everybody out. Without keys nobody can sign in, so a random secret will do."""
    if settings.session_secret:
        return settings.session_secret.encode("utf-8")
    keys = sorted(set(settings.api_keys + settings.admin_api_keys))
    if not keys:
        return secrets.token_bytes(32)
    return hmac.new(b"segment-worker dashboard session", "\n".join(keys).encode("utf-8"), hashlib.sha256).digest()


# --- guard ----------------------------------------------------------------------------------------------------

@bp.before_request
def require_session() -> Response | None:
    g.access = _session_access()
    if g.access is None and request.endpoint not in _PUBLIC_ENDPOINTS:
        return redirect(url_for("dashboard.signin"))
    if request.method == "POST":
        _check_csrf()
    return None


def _session_access() -> str | None:
    """'write', 'read' or None: the session's key fingerprint checked against the keys configured now, then the
    session against its lifetimes and its key's sign-outs. A session that is over is cleared, saying why."""
    mark = session.get(_SESSION_KEY)
    if not isinstance(mark, str):
        return None
    fingerprints: _Fingerprints = current_app.extensions[_FINGERPRINTS]
    can_read = key_matches(mark, fingerprints.read)
    can_write = key_matches(mark, fingerprints.write)
    if not (can_read or can_write):
        return None
    why = _session_over(mark)
    if why is not None:
        session.clear()
        flash(why)
        return None
    return "write" if can_write else "read"


def _session_over(key_fingerprint: str) -> str | None:
    """Why this session is over, or None while it lasts (then its latest page is now)."""
    now = _seconds(context().clock())
    since, seen = session.get(_SESSION_SINCE), session.get(_SESSION_SEEN)
    if not isinstance(since, int) or not isinstance(seen, int):
        return "This session has ended; sign in again."
    if now - seen > SESSION_IDLE_MINUTES * 60:
        return f"Signed out after {SESSION_IDLE_MINUTES} minutes without activity; sign in again."
    if now - since > SESSION_HOURS * 3600:
        return f"Signed out {SESSION_HOURS} hours after signing in; sign in again."
    if session.get(_SESSION_SIGN_OUT) != _sign_out_mark(key_fingerprint):
        return "This session was signed out; sign in again."
    session[_SESSION_SEEN] = now  # only the cookie changes: nothing is written to the store per page
    return None


def _sign_out_mark(key_fingerprint: str) -> str:
    """The key's current sign-out mark; '' until it first signs out."""
    return context().store.sign_out_mark(_sign_out_key(key_fingerprint))


def _sign_out_key(key_fingerprint: str) -> str:
    # a hash, never the fingerprint the cookie holds
    return hashlib.sha256(key_fingerprint.encode("utf-8")).hexdigest()[:32]


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def csrf_token() -> str:
    token = session.get(_SESSION_CSRF)
    if not isinstance(token, str):
        token = session[_SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def _check_csrf() -> None:
    expected = session.get(_SESSION_CSRF)
    sent = request.form.get("csrf_token", "")
    if isinstance(expected, str) and hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
        return
    hint = ""
    if not request.is_secure and current_app.config["SESSION_COOKIE_SECURE"]:
        hint = (" This page came over plain HTTP but the session cookie is HTTPS-only: use HTTPS, or set "
                "DASHBOARD_INSECURE_COOKIE=true on a machine nobody else can reach.")
    raise BadRequest("This form has expired or did not come from this dashboard; reload the page and try again."
                     + hint)


# --- sign in and out ------------------------------------------------------------------------------------------

@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Response | str | tuple[str, int] | tuple[str, int, dict[str, str]]:
    if request.method == "GET":
        if g.access is not None:
            return redirect(url_for("dashboard.overview"))
        return render_template("dashboard/signin.html", refused=False)
    fingerprints: _Fingerprints = current_app.extensions[_FINGERPRINTS]
    address, now = request.remote_addr or "", context().clock()
    wait = key_failures().retry_after(address, now)  # the same count as /api's: one guesser, one budget
    if wait is not None:
        return (render_template("dashboard/signin.html", refused=False, retry_after=wait), 429,
                {"Retry-After": str(wait)})
    key = request.form.get("api_key", "").strip()
    if not key or not key_matches(fingerprints.of(key), fingerprints.read):
        log.warning("dashboard sign-in refused for %s", address)
        if key:
            key_failures().record(address, now)
        return render_template("dashboard/signin.html", refused=True, no_keys=not fingerprints.read), 401
    session.clear()  # a fresh session (and CSRF token) for the signed-in person
    session.permanent = True
    session[_SESSION_KEY] = fingerprints.of(key)
    session[_SESSION_SIGN_OUT] = _sign_out_mark(session[_SESSION_KEY])
    session[_SESSION_SINCE] = session[_SESSION_SEEN] = _seconds(now)
    csrf_token()
    log.info("dashboard sign-in with a %s key from %s",
             "write" if key_matches(session[_SESSION_KEY], fingerprints.write) else "read", request.remote_addr)
    return redirect(url_for("dashboard.overview"))


@bp.post("/signout")
def signout() -> Response:
    # A new mark refuses this cookie everywhere, kept or copied: clearing it here only tidies this browser.
    context().store.renew_sign_out_mark(_sign_out_key(session[_SESSION_KEY]))
    session.clear()
    log.info("dashboard sign-out from %s: every session of that key has ended", request.remote_addr)
    flash("Signed out. Any other browser signed in with this key is signed out too.")
    return redirect(url_for("dashboard.signin"))

