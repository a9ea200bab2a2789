"""Signed participant tokens: HMAC-SHA256 over the claims, shared secret across gateways."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import msgspec


class ParticipantClaims(msgspec.Struct, frozen=True, omit_defaults=True):
    run: str
    batch: str
    exp: int
    study: str = ""
    version: int = 0  # the study version the run is pinned to


class TokenError(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: str, ttl_s: int) -> None:
        self._key = hashlib.sha256(("cohort-participant:" + secret).encode()).digest()
        self.ttl_s = ttl_s

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, run: str, batch: str, study: str = "", version: int = 0) -> str:
        claims = ParticipantClaims(run=run, batch=batch, exp=int(time.time()) + self.ttl_s,
                                   study=study, version=version)
        payload = msgspec.json.encode(claims)
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, token: str) -> ParticipantClaims:
        try:
            payload_part, sig_part = token.split(".")
            payload, signature = _unb64(payload_part), _unb64(sig_part)
        except (ValueError, TypeError) as exc:
            raise TokenError("malformed token") from exc
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise TokenError("bad token signature")
        try:
            claims = msgspec.json.decode(payload, type=ParticipantClaims)
        except msgspec.DecodeError as exc:
            raise TokenError("malformed token claims") from exc
        if claims.exp < time.time():
            raise TokenError("token expired")
        return claims
