"""One-time install tokens: what a machine shows to be given what is only for it.

An address or a MAC is not a credential. When bootstrapperd serves a machine its boot script,
it puts a fresh random token for that machine and that install attempt into the kernel
arguments (``bootstrapperd.token=``); ``install.sh`` presents it (``Authorization: Bearer``)
to fetch the configuration that carries the secrets a node cannot make itself (the masters'
service-account key) and to have the certificate requests of the keys it made signed.

- A token is good for each of its uses once (:data:`USES`: the configuration, and one signing
  per certificate). A second use of the same kind is refused and raises an alarm: someone else
  had the token (or the machine was answered twice), and the operator must look.
- A token dies when its machine reports ``installed``, when a newer boot script supersedes it,
  and after :data:`LIFETIME` seconds.
- Tokens are kept as SHA-256 digests only; every issue, use and refusal is logged.
- Bounded: one live token per machine, at most :data:`MAX_TOKENS` machines with one (the
  oldest is dropped), at most :data:`MAX_ALARMS` alarms kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .statedb import StateDB

__all__ = ["LIFETIME", "USES", "Alarm", "TokenStore", "Verdict"]

log = logging.getLogger("bootstrapperd.tokens")

LIFETIME = 2 * 3600.0  # seconds: a slow disk and a slow mirror still finish an install
MAX_TOKENS = 20_000
MAX_ALARMS = 1_000
USES = ("config", "csr:worker", "csr:apiserver", "csr:admin")
_COLUMNS = ("mac", "digest", "issued", "expires", "used")


class Verdict(StrEnum):
    GRANTED = "granted"
    NO_TOKEN = "no-token"  # noqa: S105 (a verdict's name: none was presented)
    UNKNOWN = "unknown"  # not this machine's live token (wrong, superseded or never issued)
    EXPIRED = "expired"
    USED = "used"  # this use was made already: a second use
    ENDED = "ended"  # the machine reported installed


@dataclass(frozen=True, slots=True)
class Alarm:
    at: float
    mac: str
    use: str
    verdict: Verdict
    client: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "mac": self.mac,
            "use": self.use,
            "verdict": str(self.verdict),
            "client": self.client,
        }


@dataclass(slots=True)
class _Token:
    digest: str
    issued: float
    expires: float
    used: set[str] = field(default_factory=set)
    ended: bool = False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._tokens: dict[str, _Token] = {}
        self._alarms: deque[Alarm] = deque(maxlen=MAX_ALARMS)
        self.counters: Counter[str] = Counter()
        for mac, digest, issued, expires, used in db.query(
            "SELECT mac, digest, issued, expires, used FROM install_tokens ORDER BY issued"
        ):
            uses = {u for u in str(used).split(",") if u in USES}
            ended = "ended" in str(used).split(",")
            self._tokens[str(mac)] = _Token(str(digest), float(issued), float(expires), uses, ended)

    # --- issuing ------------------------------------------------------------------------------

    def issue(self, mac: str, now: float) -> str:
        """A fresh token for ``mac``'s install attempt; any earlier one dies."""
        token = secrets.token_urlsafe(32)
        if mac not in self._tokens and len(self._tokens) >= MAX_TOKENS:
            oldest = min(self._tokens, key=lambda m: self._tokens[m].issued)
            self._forget(oldest)
            self.counters["dropped"] += 1
        superseded = mac in self._tokens and not self._tokens[mac].ended
        self._tokens[mac] = _Token(_digest(token), now, now + LIFETIME)
        self._persist(mac)
        self.counters["issued"] += 1
        log.info(
            "install token issued",
            extra={"fields": {"mac": mac, "lifetime": LIFETIME, "superseded": superseded}},
        )
        return token

    # --- using --------------------------------------------------------------------------------

    def redeem(self, mac: str, token: str | None, use: str, now: float, client: str) -> Verdict:
        """Spend ``token`` on ``use`` for ``mac``: GRANTED once per use; anything else is
        refused, logged, and (but for no token at all) raises an alarm."""
        if use not in USES:
            raise ValueError(f"unknown token use {use!r}")
        verdict = self._verdict(mac, token, use, now)
        self.counters[str(verdict)] += 1
        fields = {"mac": mac, "use": use, "client": client, "verdict": str(verdict)}
        if verdict is Verdict.GRANTED:
            self._tokens[mac].used.add(use)
            self._persist(mac)
            log.info("install token used", extra={"fields": fields})
        elif verdict is Verdict.NO_TOKEN:
            log.info("no install token: nothing secret is given", extra={"fields": fields})
        else:
            self._alarms.append(Alarm(now, mac, use, verdict, client))
            self.counters["alarms"] += 1
            log.warning(
                "install token refused: someone else may have had it", extra={"fields": fields}
            )
        return verdict

    def _verdict(self, mac: str, token: str | None, use: str, now: float) -> Verdict:
        if not token:
            return Verdict.NO_TOKEN
        held = self._tokens.get(mac)
        if held is None or not hmac.compare_digest(held.digest, _digest(token)):
            return Verdict.UNKNOWN
        if held.ended:
            return Verdict.ENDED
        if now >= held.expires:
            return Verdict.EXPIRED
        if use in held.used:
            return Verdict.USED
        return Verdict.GRANTED

    def end(self, mac: str, now: float) -> None:
        """The machine reported ``installed``: its token dies."""
        held = self._tokens.get(mac)
        if held is None or held.ended:
            return
        held.ended = True
        held.expires = min(held.expires, now)
        self._persist(mac)
        log.info("install token ended: the machine is installed", extra={"fields": {"mac": mac}})

    # --- what the operator sees ---------------------------------------------------------------

    def alarms(self) -> list[Alarm]:
        """The latest alarms, oldest first."""
        return list(self._alarms)

    def alarms_of(self, mac: str) -> list[Alarm]:
        return [alarm for alarm in self._alarms if alarm.mac == mac]

    def live(self, mac: str, now: float) -> bool:
        held = self._tokens.get(mac)
        return held is not None and not held.ended and now < held.expires

    # --- storage ------------------------------------------------------------------------------

    def _persist(self, mac: str) -> None:
        held = self._tokens[mac]
        used = ",".join(sorted(held.used | ({"ended"} if held.ended else set())))
        row = (mac, held.digest, held.issued, held.expires, used)
        self._db.insert("install_tokens", _COLUMNS, row, replace=True)

    def _forget(self, mac: str) -> None:
        del self._tokens[mac]
        self._db.write("DELETE FROM install_tokens WHERE mac = ?", (mac,))
