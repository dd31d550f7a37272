"""The vocabulary of power control: a BMC as plain values, the actions, and the result of one
action on one machine. Drivers raise ``PowerError`` for a BMC's problems; ``control`` turns
every one of them into a ``PowerResult`` so that nothing about a BMC ever reaches the caller
as an exception."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "BMC",
    "Action",
    "Attempt",
    "Driver",
    "Failure",
    "PowerError",
    "PowerResult",
    "PowerState",
    "Protocol",
]


class Protocol(StrEnum):
    IPMI = "ipmi"
    REDFISH = "redfish"


DEFAULT_PORTS = {Protocol.IPMI: 623, Protocol.REDFISH: 443}


class Action(StrEnum):
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"
    STATUS = "status"
    PXE_ONCE = "pxe_once"


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class Failure(StrEnum):
    """Why an action failed, for the timeline and for the operator's next step."""

    UNREACHABLE = "unreachable"  # nothing answered: address, cabling, the BMC itself
    TIMEOUT = "timeout"  # it answered, then did not finish within the timeout
    CREDENTIALS = "credentials"  # the username or password was rejected
    TLS = "tls"  # a Redfish BMC whose certificate is not trusted
    REFUSED = "refused"  # logged in, and the BMC refused the command
    ERROR = "error"  # an answer that makes no sense, or a local limit


@dataclass(frozen=True, kw_only=True)
class BMC:
    """One machine's BMC. The caller reads ``password_file``; the password is kept out of
    ``repr`` (and so out of logs and tracebacks). ``ca_file`` and ``insecure`` concern Redfish
    only (TLS is verified against the system's CAs unless one of them says otherwise);
    ``system`` picks a Redfish system when a BMC manages more than one."""

    address: str
    protocol: Protocol
    username: str
    password: str = field(repr=False)
    port: int | None = None
    ca_file: str | None = None
    insecure: bool = False
    system: str | None = None

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.protocol]

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"BMC {host}:{self.effective_port} ({self.protocol})"


@dataclass(frozen=True)
class PowerResult:
    """The outcome of one action on one machine: ``message`` is one line for the operator and
    the machine's timeline; ``state`` is what the BMC last said (``unknown`` when it said
    nothing); ``failure`` says why when ``ok`` is false."""

    ok: bool
    state: PowerState
    message: str
    failure: Failure | None = None


@dataclass
class Attempt:
    """What a driver reports while it works, so that a timeout can say whether the BMC ever
    answered (then it is slow or stuck) or not (then it is unreachable)."""

    timeout: float
    answered: bool = False


class PowerError(Exception):
    """A BMC's problem, with its kind; ``str()`` is the one line shown."""

    def __init__(
        self, failure: Failure, message: str, state: PowerState = PowerState.UNKNOWN
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.state = state


# A driver carries out one action; it raises PowerError for a BMC's problems.
Driver = Callable[[BMC, Action, Attempt], Awaitable[PowerResult]]
