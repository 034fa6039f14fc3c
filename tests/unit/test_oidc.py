"""OIDC verification of push and task requests, against a local stand-in for Google."""

from __future__ import annotations

import time

import pytest

from handlers.auth import OidcVerifier
from handlers.errors import CertificatesUnavailable, Forbidden, Unauthenticated
from tests.oidc_issuer import LocalGoogleIssuer, SigningKey

AUDIENCE = "https://alerts-123.europe-west1.run.app"
PUSHER = "pubsub-push@proj.iam.gserviceaccount.com"


def verifier(issuer: LocalGoogleIssuer) -> OidcVerifier:
    return OidcVerifier(audience=AUDIENCE, allowed_emails=[PUSHER], certs_url=issuer.certs_url)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_valid_token_passes_and_returns_its_claims(google_issuer: LocalGoogleIssuer) -> None:
    claims = verifier(google_issuer).verify(bearer(google_issuer.mint(AUDIENCE, PUSHER)))
    assert claims["email"] == PUSHER
    assert claims["aud"] == AUDIENCE


def test_expired_token_is_401(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint(AUDIENCE, PUSHER, issued_at=int(time.time()) - 7200, expires_in=3600)
    with pytest.raises(Unauthenticated) as raised:
        verifier(google_issuer).verify(bearer(token))
    assert raised.value.status == 401
    assert token not in str(raised.value)


def test_token_from_the_future_is_401(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint(AUDIENCE, PUSHER, issued_at=int(time.time()) + 600)
    with pytest.raises(Unauthenticated):
        verifier(google_issuer).verify(bearer(token))


def test_wrong_audience_is_401(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint("https://someone-else.run.app", PUSHER)
    with pytest.raises(Unauthenticated):
        verifier(google_issuer).verify(bearer(token))


def test_wrong_account_is_403(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint(AUDIENCE, "intruder@other.iam.gserviceaccount.com")
    with pytest.raises(Forbidden) as raised:
        verifier(google_issuer).verify(bearer(token))
    assert raised.value.status == 403


def test_unverified_email_is_403(google_issuer: LocalGoogleIssuer) -> None:
    with pytest.raises(Forbidden):
        verifier(google_issuer).verify(
            bearer(google_issuer.mint(AUDIENCE, PUSHER, email_verified=False))
        )


def test_wrong_issuer_is_401(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint(AUDIENCE, PUSHER, issuer="https://evil.example")
    with pytest.raises(Unauthenticated):
        verifier(google_issuer).verify(bearer(token))


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==", "Bearer not.a.jwt"]
)
def test_missing_or_malformed_header_is_401(
    google_issuer: LocalGoogleIssuer, authorization: str | None
) -> None:
    with pytest.raises(Unauthenticated):
        verifier(google_issuer).verify(authorization)


def test_token_signed_by_an_unpublished_key_is_401(google_issuer: LocalGoogleIssuer) -> None:
    forged = google_issuer.mint(AUDIENCE, PUSHER, key=SigningKey.generate())
    with pytest.raises(Unauthenticated):
        verifier(google_issuer).verify(bearer(forged))


def test_certificates_are_cached(google_issuer: LocalGoogleIssuer) -> None:
    check = verifier(google_issuer)
    for _ in range(20):
        check.verify(bearer(google_issuer.mint(AUDIENCE, PUSHER)))
    assert google_issuer.fetches == 1


def test_key_rotation_refetches_once(google_issuer: LocalGoogleIssuer) -> None:
    check = verifier(google_issuer)
    check.verify(bearer(google_issuer.mint(AUDIENCE, PUSHER)))
    check._fetched_at -= 60  # the rotation happens a minute later
    google_issuer.rotate()
    check.verify(bearer(google_issuer.mint(AUDIENCE, PUSHER)))
    assert google_issuer.fetches == 2


def test_unknown_key_ids_do_not_hammer_the_certificate_endpoint(
    google_issuer: LocalGoogleIssuer,
) -> None:
    check = verifier(google_issuer)
    check.verify(bearer(google_issuer.mint(AUDIENCE, PUSHER)))
    for _ in range(10):
        with pytest.raises(Unauthenticated):
            check.verify(bearer(google_issuer.mint(AUDIENCE, PUSHER, key=SigningKey.generate())))
    assert google_issuer.fetches == 1


def test_certificates_unavailable_is_retryable_not_the_callers_fault(
    google_issuer: LocalGoogleIssuer,
) -> None:
    google_issuer.available = False
    with pytest.raises(CertificatesUnavailable) as raised:
        verifier(google_issuer).verify(bearer(google_issuer.mint(AUDIENCE, PUSHER)))
    assert raised.value.status == 503
