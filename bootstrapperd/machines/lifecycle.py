"""Each machine's life after its first install: its provisioning state, and what a network
boot gets because of it.

States (as MAAS's machine states, Tinkerbell's ``allowPXE``, matchbox's selectors answer it):

- ``discovered``: seen, not in the description, and ``dhcp.unknown_machines: approve``: it
  waits in iPXE (its script asks again every ``boot.WAIT_SECONDS``) until the operator approves
  it;
- ``ready``: installs on its next network boot (a listed machine, an allowed or approved
  unknown one, or one the operator asked to reinstall);
- ``installing``: install.sh reported ``installing``;
- ``installed``: install.sh reported ``installed``; a network boot now boots its own disk
  (unless ``install_policy: always``);
- ``failed``: install.sh reported ``install-failed``; the next network boot tries again.

The state is kept in the state database (it survives restarts and reloads); a machine never
recorded has its default (``ready``, or ``discovered`` under ``approve``: only that default is
ever ``discovered``, so approving is recording ``ready``). Unknown machines
recorded are bounded (:data:`MAX_UNKNOWN`, the oldest forgotten first).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ..model import ClusterModel, InstallPolicy, UnknownMachines
from .boot import BootAction
from .events import EventKind, Source
from .statedb import StateDB

__all__ = [
    "BootAction",
    "Lifecycle",
    "LifecycleError",
    "MachineState",
    "StateEntry",
]

log = logging.getLogger("bootstrapperd.machines")

MAX_UNKNOWN = 4096  # unknown machines whose state is kept (listed ones always are)


class MachineState(StrEnum):
    DISCOVERED = "discovered"
    READY = "ready"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"


class LifecycleError(Exception):
    """An operator's request that cannot be done; the message says why."""


@dataclass(frozen=True, slots=True)
class StateEntry:
    state: MachineState
    since: float  # wall clock
    why: str  # what set it: "report installed", "reinstall by admin", ...


# The reports of install.sh that move a machine along.
_REPORTED = {
    EventKind.INSTALLING: MachineState.INSTALLING,
    EventKind.INSTALLED: MachineState.INSTALLED,
    EventKind.INSTALL_FAILED: MachineState.FAILED,
}
_COLUMNS = ("mac", "state", "since", "why")  # the machine_states table (statedb.SCHEMA)


class Lifecycle:
    """The machines' provisioning states, kept in ``db`` and in memory."""

    def __init__(
        self,
        db: StateDB,
        model: Callable[[], ClusterModel],
        clock: Callable[[], float] = time.time,
        max_unknown: int = MAX_UNKNOWN,
        record: Callable[..., object] | None = None,
    ) -> None:
        """``record``: the timeline's ``record(mac, at, source, kind, **detail)``, for the boot
        decisions and the operator's changes."""
        self._db = db
        self._record = record
        self._model = model
        self._clock = clock
        self._max_unknown = max_unknown
        self._entries: dict[str, StateEntry] = {}
        self._unknown: OrderedDict[str, None] = OrderedDict()  # recorded unknown MACs, oldest first
        self.counters: Counter[str] = Counter()
        for mac, state, since, why in db.query(
            "SELECT mac, state, since, why FROM machine_states ORDER BY since"
        ):
            try:
                self._entries[str(mac)] = StateEntry(MachineState(state), float(since), str(why))
            except (ValueError, TypeError):
                self.counters["rows_skipped"] += 1
                continue
            if str(mac) not in model().nodes_by_mac:
                self._unknown[str(mac)] = None

    # ---- reading -----------------------------------------------------------------------------

    def default(self, mac: str) -> MachineState | None:
        """The state of a machine never recorded; None for one that is not served at all."""
        model = self._model()
        if mac in model.nodes_by_mac:
            return MachineState.READY
        policy = model.dhcp.unknown_machines
        if policy is UnknownMachines.ALLOW:
            return MachineState.READY
        if policy is UnknownMachines.APPROVE:
            return MachineState.DISCOVERED
        return None

    def entry(self, mac: str) -> StateEntry | None:
        """The machine's state and since when, or None when it is not served."""
        recorded = self._entries.get(mac)
        if recorded is not None:
            if self.default(mac) is None:
                return None  # recorded, but a reload stopped serving it
            return recorded
        state = self.default(mac)
        return StateEntry(state, 0.0, "default") if state is not None else None

    def state(self, mac: str) -> MachineState | None:
        entry = self.entry(mac)
        return entry.state if entry is not None else None

    def boot_action(self, mac: str) -> BootAction | None:
        """What a network boot of ``mac`` gets now; None when it is not served."""
        state = self.state(mac)
        if state is None:
            return None
        if state is MachineState.DISCOVERED:
            return BootAction.WAIT
        if state is MachineState.INSTALLED and self._model().install_policy is InstallPolicy.ONCE:
            return BootAction.LOCAL
        return BootAction.INSTALL

    def booting(self, mac: str, source: Source) -> BootAction | None:
        """:meth:`boot_action` for a boot script being served now by ``source``; a local boot or
        a wait is recorded in the machine's timeline."""
        action = self.boot_action(mac)
        if self._record is not None and action in (BootAction.LOCAL, BootAction.WAIT):
            kind = EventKind.LOCAL_BOOT if action is BootAction.LOCAL else EventKind.WAITING
            self._record(mac, self._clock(), source, kind)
        return action

    def counts(self, macs: tuple[str, ...]) -> Counter[str]:
        """How many of ``macs`` are in each state (every state present, 0 or more)."""
        found: Counter[str] = Counter({s.value: 0 for s in MachineState})
        for mac in macs:
            state = self.state(mac)
            if state is not None:
                found[state.value] += 1
        return found

    def recorded(self) -> tuple[str, ...]:
        return tuple(self._entries)

    # ---- changes -----------------------------------------------------------------------------

    def observe(self, mac: str, kind: EventKind) -> None:
        """A timeline event: install.sh's reports move the machine along."""
        state = _REPORTED.get(kind)
        if state is None or self.state(mac) is None:
            return
        if self.state(mac) is MachineState.DISCOVERED:
            return  # not approved: a report cannot approve it
        self._set(mac, state, f"report {kind.value}")

    def reinstall(self, mac: str, by: str) -> StateEntry:
        """``installed`` (or ``failed``) → ``ready``: the next network boot installs."""
        state = self.state(mac)
        if state is None:
            raise LifecycleError(f"{mac} is not served (not in the description, unknown machines "
                                 "are ignored)")  # fmt: skip
        if state is MachineState.DISCOVERED:
            raise LifecycleError(f"{mac} is discovered, not approved: approve it first")
        return self._set(mac, MachineState.READY, f"reinstall by {by}", operator=True)

    def approve(self, mac: str, by: str) -> StateEntry:
        """``discovered`` → ``ready``."""
        state = self.state(mac)
        if state is None:
            raise LifecycleError(f"{mac} is not served (unknown machines are ignored)")
        if state is not MachineState.DISCOVERED:
            raise LifecycleError(f"{mac} is {state}, not discovered: nothing to approve")
        return self._set(mac, MachineState.READY, f"approved by {by}", operator=True)

    def _set(
        self, mac: str, state: MachineState, why: str, *, operator: bool = False
    ) -> StateEntry:
        entry = StateEntry(state, self._clock(), why)
        old = self._entries.get(mac)
        self._entries[mac] = entry
        if mac not in self._model().nodes_by_mac:
            self._unknown[mac] = None
            self._unknown.move_to_end(mac)
            while len(self._unknown) > self._max_unknown:
                gone, _ = self._unknown.popitem(last=False)
                self._entries.pop(gone, None)
                self._db.write("DELETE FROM machine_states WHERE mac = ?", (gone,))
                self.counters["unknown_forgotten"] += 1
        self._db.insert(
            "machine_states", _COLUMNS, (mac, state.value, entry.since, why), replace=True
        )
        if operator and self._record is not None:
            was = old.state if old is not None else self.default(mac)
            self._record(
                mac, entry.since, Source.ADMIN, EventKind.STATE, state=state.value, was=was, why=why
            )
        if old is None or old.state is not state:
            self.counters[f"to_{state.value}"] += 1
            log.info(
                "machine state",
                extra={"fields": {"mac": mac, "state": state.value, "was": old.state.value if old
                                  else None, "why": why}},
            )  # fmt: skip
        return entry
