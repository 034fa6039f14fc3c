"""The verifier's edges that tests/unit/test_oidc.py leaves out.

What a rejection may reveal, junk that must stay a 401, and how the certificate
cache behaves when Google's endpoint is slow, down, or asked by many at once.
"""

from __future__ import annotations

import base64
import threading
import time
import traceback
from collections.abc import Callable

import pytest

from handlers.auth import OidcVerifier
from handlers.errors import CertificatesUnavailable, Forbidden, Unauthenticated
from tests.oidc_issuer import LocalGoogleIssuer, SigningKey

AUDIENCE = "https://alerts-123.europe-west1.run.app"
PUSHER = "pubsub-push@proj.iam.gserviceaccount.com"
RS256_HEADER = "eyJhbGciOiJSUzI1NiJ9"  # {"alg":"RS256"}


def verifier(issuer: LocalGoogleIssuer) -> OidcVerifier:
    return OidcVerifier(audience=AUDIENCE, allowed_emails=[PUSHER], certs_url=issuer.certs_url)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def everything_said_about(exc: BaseException) -> str:
    """The message, the formatted traceback, and every chained exception's text."""
    said = ["".join(traceback.format_exception(exc))]
    link: BaseException | None = exc
    while link is not None:
        said.append(f"{link!s} {link!r}")
        link = link.__cause__ or link.__context__
    return "\n".join(said)


def forged_with_the_published_kid(issuer: LocalGoogleIssuer) -> str:
    impostor = SigningKey.generate()
    impostor.kid = issuer.keys[0].kid
    return issuer.mint(AUDIENCE, PUSHER, key=impostor)


REJECTED: dict[str, tuple[Callable[[LocalGoogleIssuer], str], type[Unauthenticated]]] = {
    "expired": (
        lambda i: i.mint(AUDIENCE, PUSHER, issued_at=int(time.time()) - 7200, expires_in=3600),
        Unauthenticated,
    ),
    "from the future": (
        lambda i: i.mint(AUDIENCE, PUSHER, issued_at=int(time.time()) + 600),
        Unauthenticated,
    ),
    "wrong audience": (lambda i: i.mint("https://other.run.app", PUSHER), Unauthenticated),
    "wrong issuer": (
        lambda i: i.mint(AUDIENCE, PUSHER, issuer="https://evil.example"),
        Unauthenticated,
    ),
    "unpublished key": (
        lambda i: i.mint(AUDIENCE, PUSHER, key=SigningKey.generate()),
        Unauthenticated,
    ),
    "forged signature": (forged_with_the_published_kid, Unauthenticated),
    "wrong account": (lambda i: i.mint(AUDIENCE, "x@other.iam.gserviceaccount.com"), Forbidden),
    "email not verified": (lambda i: i.mint(AUDIENCE, PUSHER, email_verified=False), Forbidden),
    "two segments": (lambda i: f"{RS256_HEADER}.c2VjcmV0LXBheWxvYWQ", Unauthenticated),
    "header not json": (lambda i: f"{b64(b'not json at all')}.e30.AAAA", Unauthenticated),
    "deeply nested header": (lambda i: f"{b64(b'[' * 5000)}.e30.AAAA", Unauthenticated),
    "deeply nested payload": (
        lambda i: f"{RS256_HEADER}.{b64(b'[' * 5000)}.AAAA",
        Unauthenticated,
    ),
}


@pytest.mark.parametrize("case", REJECTED)
def test_a_rejection_never_reveals_the_token(google_issuer: LocalGoogleIssuer, case: str) -> None:
    mint, expected = REJECTED[case]
    token = mint(google_issuer)
    with pytest.raises(Unauthenticated) as raised:
        verifier(google_issuer).verify(f"Bearer {token}")
    assert type(raised.value) is expected
    said = everything_said_about(raised.value)
    for segment in token.split("."):
        assert segment not in said


def test_rejections_say_which_check_failed(google_issuer: LocalGoogleIssuer) -> None:
    check = verifier(google_issuer)

    def reason(token: str) -> str:
        with pytest.raises(Unauthenticated) as raised:
            check.verify(f"Bearer {token}")
        return str(raised.value).lower()

    now = int(time.time())
    assert "expired" in reason(google_issuer.mint(AUDIENCE, PUSHER, issued_at=now - 7200))
    assert "early" in reason(google_issuer.mint(AUDIENCE, PUSHER, issued_at=now + 600))
    assert "audience" in reason(google_issuer.mint("https://other.run.app", PUSHER))
    assert "signature" in reason(forged_with_the_published_kid(google_issuer))


def test_the_scheme_is_case_insensitive(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint(AUDIENCE, PUSHER)
    assert verifier(google_issuer).verify(f"bearer  {token} ")["email"] == PUSHER


def test_small_clock_skew_is_tolerated(google_issuer: LocalGoogleIssuer) -> None:
    token = google_issuer.mint(AUDIENCE, PUSHER, issued_at=int(time.time()) + 5)
    assert verifier(google_issuer).verify(f"Bearer {token}")["aud"] == AUDIENCE


def test_construction_does_not_touch_the_network(google_issuer: LocalGoogleIssuer) -> None:
    verifier(google_issuer)
    OidcVerifier(audience=AUDIENCE, allowed_emails=[PUSHER], certs_url="http://127.0.0.1:9/x")
    assert google_issuer.fetches == 0


def test_a_zero_max_age_is_honoured(google_issuer: LocalGoogleIssuer) -> None:
    google_issuer.max_age = 0
    check = verifier(google_issuer)
    for _ in range(3):
        check.verify(f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}")
    assert google_issuer.fetches == 3


def test_concurrent_first_requests_share_one_fetch(google_issuer: LocalGoogleIssuer) -> None:
    check = verifier(google_issuer)
    header = f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}"
    start = threading.Barrier(16)
    failures: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            check.verify(header)
        except Unauthenticated as exc:  # collected: an exception in a thread would go unseen
            failures.append(exc)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert google_issuer.fetches == 1


def test_held_keys_keep_working_while_the_endpoint_is_down(
    google_issuer: LocalGoogleIssuer,
) -> None:
    google_issuer.max_age = 0  # every verification wants a fresh copy
    check = verifier(google_issuer)
    check.verify(f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}")
    google_issuer.available = False
    assert check.verify(f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}")["email"] == PUSHER
    # A key it does not hold cannot be judged without the endpoint: retry, not refuse.
    with pytest.raises(CertificatesUnavailable):
        check.verify(f"Bearer {google_issuer.mint(AUDIENCE, PUSHER, key=SigningKey.generate())}")


def test_held_keys_are_not_trusted_forever_while_the_endpoint_is_down(
    google_issuer: LocalGoogleIssuer,
) -> None:
    check = verifier(google_issuer)
    header = f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}"
    check.verify(header)
    google_issuer.available = False
    check._expires_at -= 7 * 3600  # expired seven hours ago, past the six-hour grace
    with pytest.raises(CertificatesUnavailable):
        check.verify(header)


def test_after_a_failed_fetch_requests_fail_fast_then_recover(
    google_issuer: LocalGoogleIssuer,
) -> None:
    check = verifier(google_issuer)
    header = f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}"
    google_issuer.available = False
    for _ in range(10):
        with pytest.raises(CertificatesUnavailable) as raised:
            check.verify(header)
        assert raised.value.status == 503
    assert google_issuer.fetches == 1
    google_issuer.available = True
    check._retry_at -= 60  # the back-off has passed
    assert check.verify(header)["email"] == PUSHER
    assert google_issuer.fetches == 2


def test_an_unreachable_endpoint_is_retryable(google_issuer: LocalGoogleIssuer) -> None:
    check = OidcVerifier(
        audience=AUDIENCE,
        allowed_emails=[PUSHER],
        certs_url="http://127.0.0.1:9/oauth2/v1/certs",  # discard port: nothing listens
        timeout_seconds=1.0,
    )
    with pytest.raises(CertificatesUnavailable) as raised:
        check.verify(f"Bearer {google_issuer.mint(AUDIENCE, PUSHER)}")
    assert raised.value.status == 503


def test_a_verifier_that_would_admit_nobody_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed email"):
        OidcVerifier(audience=AUDIENCE, allowed_emails=[])
