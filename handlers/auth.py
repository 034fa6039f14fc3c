"""OIDC verification of the ID tokens Pub/Sub push and Cloud Tasks send.

Both sign a Google ID token as a service account we chose and send it as
`Authorization: Bearer <jwt>`. A request counts as authentic only if the
token's signature checks against Google's published certificates, it is
current, it names our audience and Google as issuer, and its verified email
is the expected service account.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

from handlers.errors import CertificatesUnavailable, Forbidden, Unauthenticated

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
_DEFAULT_MAX_AGE: Final = 3600.0
# An unknown key id may mean Google rotated keys; refetch, but not for every junk token.
_REFETCH_INTERVAL: Final = 30.0
# After a failed fetch, requests fail fast (or use the keys already held) for this long instead of
# each waiting on the lock for its own attempt, which would stack up timeouts behind one another.
_RETRY_AFTER_FAILURE: Final = 5.0
# How long past their max-age held keys still verify while the endpoint is failing. Google keeps a
# key in use for days after publishing it, but a revoked key must not live on forever here.
_STALE_GRACE: Final = 6 * 3600.0
_MAX_AGE = re.compile(r"max-age=(\d+)")
# What google-auth raises on a bad token: its own errors (ValueError subclasses), TypeError for
# ill-typed claims, and RecursionError from json on a deeply nested segment.
_JWT_ERRORS: Final = (ValueError, TypeError, RecursionError, auth_exceptions.GoogleAuthError)


class OidcVerifier:
    def __init__(
        self,
        *,
        audience: str,
        allowed_emails: Iterable[str],
        certs_url: str = GOOGLE_CERTS_URL,
        clock_skew_seconds: int = 10,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._audience = audience
        self._allowed = frozenset(allowed_emails)
        if not audience or not self._allowed:
            raise ValueError("an audience and at least one allowed email are required")
        self._certs_url = certs_url
        self._skew = clock_skew_seconds
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._certs: dict[str, str] = {}
        self._expires_at = 0.0
        self._fetched_at = float("-inf")
        self._retry_at = float("-inf")

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """Return the token's claims, or raise Unauthenticated / Forbidden."""
        token = _bearer(authorization)
        certs = self._certs_for(_header(token).get("kid"))
        claims = self._decode(token, certs)
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise Unauthenticated("token not issued by Google")
        if claims.get("email_verified") is not True or claims.get("email") not in self._allowed:
            raise Forbidden(f"caller {claims.get('email')!r} may not call this service")
        return claims

    def _decode(self, token: str, certs: dict[str, str]) -> dict[str, Any]:
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=self._audience, clock_skew_in_seconds=self._skew
            )
            return dict(claims)
        except _JWT_ERRORS as exc:
            problem = _first_line(exc)
        # Raised outside the except block so the library's exception, whose message may quote the
        # token, does not travel along as __context__; its text is passed on only if token-free.
        if any(part in problem for part in token.split(".") if part):
            problem = "invalid token"
        raise Unauthenticated(f"token rejected: {problem}")

    def _certs_for(self, kid: object) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            held = (
                bool(self._certs)
                and (not isinstance(kid, str) or kid in self._certs)
                and now < self._expires_at + _STALE_GRACE
            )
            if now < self._expires_at and (held or now - self._fetched_at < _REFETCH_INTERVAL):
                return self._certs
            if now >= self._retry_at:
                try:
                    self._fetch(now)
                except CertificatesUnavailable:
                    self._retry_at = now + _RETRY_AFTER_FAILURE
                    if not held:
                        raise
                else:
                    return self._certs
            elif not held:
                raise CertificatesUnavailable("Google's certificates are unavailable: fetch failed")
            # Stale, but Google's max-age is hours while its keys stay in use for days: a blip at
            # googleapis.com should not turn away tokens signed by a key we already hold.
            return self._certs

    def _fetch(self, now: float) -> None:
        try:
            response = requests.get(self._certs_url, timeout=self._timeout)
            response.raise_for_status()
            certs = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise CertificatesUnavailable(f"fetching Google's certificates failed: {exc}") from exc
        if not isinstance(certs, dict):
            raise CertificatesUnavailable("Google's certificates are not a JSON object")
        match = _MAX_AGE.search(response.headers.get("Cache-Control", ""))
        self._certs = {str(k): str(v) for k, v in certs.items()}
        self._expires_at = now + (float(match.group(1)) if match else _DEFAULT_MAX_AGE)
        self._fetched_at = now


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization is not a Bearer token")
    return token.strip()


def _header(token: str) -> Mapping[str, Any]:
    try:
        header: Mapping[str, Any] = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        return header
    except _JWT_ERRORS:
        pass
    # Outside the except block: google-auth's message here quotes the token.
    raise Unauthenticated("the bearer token is not a JWT")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
