"""A stand-in for Google's token issuer: an RSA key, its certificate served on loopback.

Tokens are signed with google-auth's own signer, and the certificates are
served in the shape of https://www.googleapis.com/oauth2/v1/certs, so the
verifier under test runs unchanged against them.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from ops.defaults import LOOPBACK
from ops.local.processes import free_port


@dataclass
class SigningKey:
    kid: str
    private_pem: bytes
    certificate_pem: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-issuer")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cls(
            kid=uuid.uuid4().hex,
            private_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )


@dataclass
class LocalGoogleIssuer:
    port: int
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.generate()])
    max_age: int = 3600
    fetches: int = 0
    available: bool = True

    @property
    def certs_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/oauth2/v1/certs"

    def rotate(self) -> None:
        """Publish a new key and withdraw the old one, as Google does."""
        self.keys = [SigningKey.generate()]

    def mint(
        self,
        audience: str,
        email: str,
        *,
        expires_in: int = 300,
        issued_at: int | None = None,
        email_verified: bool = True,
        issuer: str = "https://accounts.google.com",
        key: SigningKey | None = None,
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time()) if issued_at is None else issued_at
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": "1234567890",
            "email": email,
            "email_verified": email_verified,
            "iat": now,
            "exp": now + expires_in,
        }
        signer = crypt.RSASigner.from_string(key.private_pem, key_id=key.kid)  # type: ignore[no-untyped-call]
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()

    def certs(self) -> dict[str, str]:
        return {key.kid: key.certificate_pem for key in self.keys}


@pytest.fixture
def google_issuer() -> Iterator[LocalGoogleIssuer]:
    issuer = LocalGoogleIssuer(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            if not issuer.available:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps(issuer.certs()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", f"public, max-age={issuer.max_age}")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, issuer.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield issuer
    server.shutdown()
    server.server_close()
