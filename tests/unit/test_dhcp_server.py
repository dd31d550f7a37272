"""The DHCP state machine with the model-backed policy and a real lease database (no sockets):
allocation, every request state, NAK reasons, release, decline, inform, addressing, options,
durability across a restart, proxy mode."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapperd.dhcp.backend import OFFER_HOLD, QUARANTINE, ModelBackend
from bootstrapperd.machines.leases import LeaseState, LeaseStore
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.model import load_cluster_text
from protocols.dhcp.options import INFINITE, MessageType, Opt
from protocols.dhcp.server import PXE_PORT, DHCPServer, Outcome
from tests.conftest import EXAMPLE
from tests.dhcp_requests import PXE_VENDOR, request

SERVER = IPv4Address("10.77.0.1")
MASTER = "52:54:00:77:00:10"  # static 10.77.0.10 in the example
WORKER = "52:54:00:77:00:11"
STRANGER = "52:54:00:aa:00:01"
OTHER = "52:54:00:aa:00:02"
T0 = 1_800_000_000.0
EXAMPLE_TEXT = EXAMPLE.read_text()


@dataclass
class Lab:
    server: DHCPServer
    backend: ModelBackend
    leases: LeaseStore
    db: StateDB

    def handle(self, packet: object, now: float = T0, port: int = 67) -> Outcome:
        outcome = self.server.handle(packet, now, port)  # type: ignore[arg-type]
        assert outcome is not None
        return outcome

    def bind(self, mac: str, now: float = T0) -> IPv4Address:
        offer = self.handle(request(MessageType.DISCOVER, mac), now)
        assert offer.reply is not None
        yiaddr = offer.reply.yiaddr
        ack = self.handle(
            request(MessageType.REQUEST, mac, requested=str(yiaddr), server_id=str(SERVER)), now
        )
        assert ack.reply_type is MessageType.ACK
        return yiaddr


Factory = Callable[..., Lab]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Factory]:
    dbs: list[StateDB] = []

    def factory(edits: dict[str, str] | None = None, tftp_files: tuple[str, ...] = ()) -> Lab:
        text = EXAMPLE_TEXT
        for old, new in (edits or {}).items():
            assert old in text
            text = text.replace(old, new)
        model = load_cluster_text(text)
        db = StateDB(tmp_path / "state" / "bootstrapperd.db")
        dbs.append(db)
        tftpboot = tmp_path / "tftpboot"
        tftpboot.mkdir(exist_ok=True)
        for name in tftp_files:
            (tftpboot / name).write_bytes(b"binary")
        leases = LeaseStore(db)
        backend = ModelBackend(model, leases, SERVER, 80, tftpboot, Counter())
        return Lab(DHCPServer(backend), backend, leases, db)

    yield factory
    for db in dbs:
        db.close()


def restart(lab: Lab) -> Lab:
    """What a daemon restart does: commit, close, open the database again."""
    lab.db.close()
    db = StateDB(lab.db.path)
    leases = LeaseStore(db)
    backend = ModelBackend(lab.backend.model, leases, SERVER, 80, lab.backend.tftpboot, Counter())
    return Lab(DHCPServer(backend), backend, leases, db)


# ---- allocation ----------------------------------------------------------------------------


def test_static_reservation_is_offered_to_its_machine(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.DISCOVER, MASTER))
    assert outcome.reply is not None
    assert outcome.reply_type is MessageType.OFFER
    assert outcome.reply.yiaddr == IPv4Address("10.77.0.10")
    assert outcome.reply.options[Opt.HOSTNAME] == b"master1"


def test_pool_addresses_in_order_and_stable_per_mac(make: Factory) -> None:
    lab = make()
    first = lab.handle(request(MessageType.DISCOVER, STRANGER)).address
    second = lab.handle(request(MessageType.DISCOVER, OTHER)).address
    again = lab.handle(request(MessageType.DISCOVER, STRANGER)).address
    assert (first, second, again) == (
        IPv4Address("10.77.0.100"),
        IPv4Address("10.77.0.101"),
        IPv4Address("10.77.0.100"),
    )


def test_requested_free_address_is_honoured_and_taken_one_is_not(make: Factory) -> None:
    lab = make()
    assert lab.bind(STRANGER) == IPv4Address("10.77.0.100")
    wants_taken = lab.handle(request(MessageType.DISCOVER, OTHER, requested="10.77.0.100"))
    assert wants_taken.address == IPv4Address("10.77.0.101")
    wants_free = lab.handle(
        request(MessageType.DISCOVER, "52:54:00:aa:00:03", requested="10.77.0.150")
    )
    assert wants_free.address == IPv4Address("10.77.0.150")


def test_reserved_addresses_never_come_from_the_pool(make: Factory) -> None:
    # The pool overlaps the bootstrapper, the router and a static reservation.
    lab = make(
        {"iplow: 10.77.0.100": "iplow: 10.77.0.1", "iphigh: 10.77.0.199": "iphigh: 10.77.0.12"}
    )
    given = [lab.bind(f"52:54:00:bb:00:{i:02x}") for i in range(2)]
    assert given == [IPv4Address("10.77.0.2"), IPv4Address("10.77.0.3")]
    nak = lab.handle(
        request(MessageType.REQUEST, "52:54:00:bb:00:09", requested="10.77.0.10")
    )  # master1's static address, asked for by another machine
    assert nak.reply_type is MessageType.NAK
    assert nak.note == "address reserved"


def test_pool_exhausted_no_offer_warning_and_metric(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    lab = make({"iphigh: 10.77.0.199": "iphigh: 10.77.0.101"})
    lab.bind(STRANGER)
    lab.bind(OTHER)
    outcome = lab.handle(request(MessageType.DISCOVER, "52:54:00:aa:00:03"))
    assert outcome.reply is None
    assert outcome.note == "no free address"
    assert lab.backend.counters["pool_exhausted"] == 1
    assert "pool exhausted" in caplog.text
    assert "52:54:00:aa:00:03" in str([r.__dict__.get("fields") for r in caplog.records])


def test_expired_lease_is_reused_only_after_it_expires(make: Factory) -> None:
    lab = make({"iphigh: 10.77.0.199": "iphigh: 10.77.0.100", 'lease: "12h"': 'lease: "1h"'})
    assert lab.bind(STRANGER) == IPv4Address("10.77.0.100")
    before = lab.handle(request(MessageType.DISCOVER, OTHER), T0 + 3599)
    assert before.reply is None
    after = lab.handle(request(MessageType.DISCOVER, OTHER), T0 + 3601)
    assert after.address == IPv4Address("10.77.0.100")


def test_unanswered_offer_is_held_then_freed(make: Factory) -> None:
    lab = make({"iphigh: 10.77.0.199": "iphigh: 10.77.0.100"})
    assert lab.handle(request(MessageType.DISCOVER, STRANGER)).address is not None
    assert lab.handle(request(MessageType.DISCOVER, OTHER), T0 + 1).reply is None
    later = lab.handle(request(MessageType.DISCOVER, OTHER), T0 + OFFER_HOLD + 1)
    assert later.address == IPv4Address("10.77.0.100")


def test_unknown_machines_ignored_when_the_model_says_so(make: Factory) -> None:
    lab = make({"unknown_machines: allow": "unknown_machines: ignore"})
    ignored = lab.handle(request(MessageType.DISCOVER, STRANGER))
    assert ignored.reply is None
    assert "not admitted" in ignored.note
    assert lab.handle(request(MessageType.DISCOVER, WORKER)).reply is not None


# ---- REQUEST states, NAK, release, decline, inform ----------------------------------------


def test_selecting_request_acks_and_binds_durably(make: Factory) -> None:
    lab = make()
    offer = lab.handle(request(MessageType.DISCOVER, WORKER))
    assert offer.reply is not None
    ack = lab.handle(
        request(
            MessageType.REQUEST, WORKER, requested=str(offer.reply.yiaddr), server_id="10.77.0.1"
        )
    )
    assert ack.reply is not None
    assert ack.reply_type is MessageType.ACK
    assert ack.durable
    assert ack.reply.yiaddr == offer.reply.yiaddr
    lease = lab.leases.of(WORKER)
    assert lease is not None
    assert lease.state is LeaseState.BOUND
    assert lease.expires == T0 + 12 * 3600
    assert lab.db.dirty  # written only once flushed; the endpoint sends the ACK after that


def test_request_for_another_server_is_not_answered(make: Factory) -> None:
    lab = make()
    lab.handle(request(MessageType.DISCOVER, WORKER))
    outcome = lab.handle(
        request(MessageType.REQUEST, WORKER, requested="10.77.0.100", server_id="10.77.0.2")
    )
    assert outcome.reply is None
    assert "chose server 10.77.0.2" in outcome.note


@pytest.mark.parametrize(
    ("mac", "address", "reason"),
    [
        (STRANGER, "192.168.1.50", "wrong subnet"),
        (STRANGER, "10.77.0.50", "address not ours"),
        (MASTER, "10.77.0.150", "this machine's address is 10.77.0.10"),
        (OTHER, "10.77.0.100", "address taken"),
    ],
)
def test_init_reboot_nak_reasons(make: Factory, mac: str, address: str, reason: str) -> None:
    lab = make()
    lab.bind(STRANGER)  # holds 10.77.0.100
    outcome = lab.handle(request(MessageType.REQUEST, mac, requested=address))
    assert outcome.reply is not None
    assert outcome.reply_type is MessageType.NAK
    assert outcome.note == reason
    assert outcome.reply.options[Opt.MESSAGE] == reason.encode()
    assert outcome.reply.yiaddr == IPv4Address(0)
    assert outcome.destination is not None
    assert outcome.destination.address == IPv4Address("255.255.255.255")


def test_init_reboot_of_own_address_is_acked(make: Factory) -> None:
    lab = make()
    address = lab.bind(STRANGER)
    outcome = lab.handle(request(MessageType.REQUEST, STRANGER, requested=str(address)), T0 + 60)
    assert outcome.reply_type is MessageType.ACK


def test_renewing_and_rebinding_ack_to_ciaddr(make: Factory) -> None:
    lab = make()
    address = lab.bind(WORKER)
    for broadcast in (False, True):  # renewing is unicast, rebinding broadcast; both carry ciaddr
        renew = lab.handle(
            request(MessageType.REQUEST, WORKER, ciaddr=str(address), broadcast=broadcast),
            T0 + 6 * 3600,
        )
        assert renew.reply is not None
        assert renew.reply_type is MessageType.ACK
        assert renew.reply.ciaddr == address
        assert renew.destination is not None
        assert (renew.destination.address, renew.destination.port) == (address, 68)
    lease = lab.leases.of(WORKER)
    assert lease is not None
    assert lease.expires == T0 + 18 * 3600


def test_release_frees_the_address_but_remembers_the_machine(make: Factory) -> None:
    lab = make()
    address = lab.bind(STRANGER)
    released = lab.handle(request(MessageType.RELEASE, STRANGER, ciaddr=str(address)))
    assert released.reply is None
    assert released.note == "released"
    other = lab.handle(request(MessageType.DISCOVER, OTHER)).address
    assert other != address  # never-used addresses first
    assert lab.handle(request(MessageType.DISCOVER, STRANGER)).address == address


def test_release_of_someone_elses_address_is_ignored(make: Factory) -> None:
    lab = make()
    address = lab.bind(STRANGER)
    outcome = lab.handle(request(MessageType.RELEASE, OTHER, ciaddr=str(address)))
    assert "not leased to this client" in outcome.note
    assert lab.leases.holder(address, T0) == STRANGER


def test_decline_quarantines_the_address(make: Factory) -> None:
    lab = make({"iphigh: 10.77.0.199": "iphigh: 10.77.0.101"})
    address = lab.bind(STRANGER)
    outcome = lab.handle(
        request(MessageType.DECLINE, STRANGER, requested=str(address), server_id="10.77.0.1")
    )
    assert outcome.note == "address quarantined"
    assert lab.handle(request(MessageType.DISCOVER, STRANGER)).address == IPv4Address("10.77.0.101")
    assert lab.handle(request(MessageType.DISCOVER, OTHER), T0 + 1).reply is None
    free_again = lab.handle(request(MessageType.DISCOVER, OTHER), T0 + QUARANTINE + 1)
    assert free_again.address == address


def test_inform_gets_options_without_a_lease(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.INFORM, STRANGER, ciaddr="10.77.0.50"))
    assert outcome.reply is not None
    assert outcome.reply_type is MessageType.ACK
    assert outcome.reply.yiaddr == IPv4Address(0)
    assert Opt.LEASE_TIME not in outcome.reply.options
    assert outcome.reply.options[Opt.DNS] == IPv4Address("10.77.0.1").packed
    assert outcome.destination is not None
    assert outcome.destination.address == IPv4Address("10.77.0.50")


# ---- options and addressing ----------------------------------------------------------------


def test_reply_options_and_timers(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.DISCOVER, WORKER))
    assert outcome.reply is not None
    opts = outcome.reply.options
    assert opts[Opt.SERVER_ID] == SERVER.packed
    assert opts[Opt.SUBNET_MASK] == IPv4Address("255.255.255.0").packed
    assert opts[Opt.ROUTER] == SERVER.packed
    assert opts[Opt.DNS] == SERVER.packed
    assert opts[Opt.DOMAIN_NAME] == b"cluster.example"
    assert opts[Opt.BROADCAST] == IPv4Address("10.77.0.255").packed
    assert opts[Opt.HOSTNAME] == b"worker1"
    assert opts[Opt.NTP] == SERVER.packed  # set_ntp: y
    assert int.from_bytes(opts[Opt.LEASE_TIME], "big") == 12 * 3600
    assert int.from_bytes(opts[Opt.RENEWAL_TIME], "big") == 6 * 3600
    assert int.from_bytes(opts[Opt.REBINDING_TIME], "big") == 12 * 3600 * 7 // 8
    assert next(iter(opts)) == Opt.MESSAGE_TYPE


def test_only_requested_options_plus_the_required_ones(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.DISCOVER, WORKER, params=bytes([3])))
    assert outcome.reply is not None
    assert set(outcome.reply.options) == {
        Opt.MESSAGE_TYPE,
        Opt.SERVER_ID,
        Opt.LEASE_TIME,
        Opt.RENEWAL_TIME,
        Opt.REBINDING_TIME,
        Opt.SUBNET_MASK,
        Opt.ROUTER,
    }


def test_no_parameter_list_gets_the_usual_set(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.DISCOVER, WORKER, params=None))
    assert outcome.reply is not None
    for code in (Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS, Opt.DOMAIN_NAME, Opt.BROADCAST):
        assert code in outcome.reply.options
    assert Opt.NTP not in outcome.reply.options


def test_infinite_lease(make: Factory) -> None:
    lab = make({'lease: "12h"': "lease: infinite"})
    lab.bind(WORKER)
    outcome = lab.handle(request(MessageType.DISCOVER, WORKER))
    assert outcome.reply is not None
    assert int.from_bytes(outcome.reply.options[Opt.LEASE_TIME], "big") == INFINITE
    assert Opt.RENEWAL_TIME not in outcome.reply.options
    lease = lab.leases.of(WORKER)
    assert lease is not None
    assert lease.expires is None
    assert lab.leases.holder(lease.ip, T0 + 10 * 365 * 86400) == WORKER


def test_client_identifier_and_relay_information_are_echoed(make: Factory) -> None:
    lab = make()
    relay = b"\x01\x04port\x02\x03sw1"
    outcome = lab.handle(
        request(
            MessageType.DISCOVER,
            WORKER,
            giaddr="10.77.0.254",
            extra={Opt.CLIENT_ID: b"\x01" + bytes(6), Opt.RELAY_AGENT: relay},
        )
    )
    assert outcome.reply is not None
    assert outcome.reply.options[Opt.CLIENT_ID] == b"\x01" + bytes(6)
    assert list(outcome.reply.options.items())[-1] == (Opt.RELAY_AGENT, relay)
    assert outcome.reply.giaddr == IPv4Address("10.77.0.254")


@pytest.mark.parametrize(
    ("kwargs", "address", "port", "mac"),
    [
        ({"giaddr": "10.77.0.254"}, "10.77.0.254", 67, False),
        ({"broadcast": True}, "255.255.255.255", 68, False),
        ({}, "10.77.0.100", 68, True),
    ],
)
def test_offer_destination_rfc2131_4_1(
    make: Factory, kwargs: dict[str, object], address: str, port: int, mac: bool
) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.DISCOVER, STRANGER, **kwargs))  # type: ignore[arg-type]
    assert outcome.destination is not None
    assert outcome.destination.address == IPv4Address(address)
    assert outcome.destination.port == port
    assert (outcome.destination.mac is not None) == mac


def test_relay_from_another_subnet_is_ignored(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(request(MessageType.DISCOVER, STRANGER, giaddr="192.168.9.1"))
    assert outcome.reply is None
    assert "another subnet" in outcome.note


def test_nak_through_a_relay_goes_to_the_relay_with_broadcast_flag(make: Factory) -> None:
    lab = make()
    outcome = lab.handle(
        request(MessageType.REQUEST, STRANGER, requested="10.77.0.50", giaddr="10.77.0.254")
    )
    assert outcome.reply is not None
    assert outcome.reply_type is MessageType.NAK
    assert outcome.reply.flags & 0x8000
    assert outcome.destination is not None
    assert outcome.destination.port == 67


def test_server_messages_and_bootp_are_not_answered(make: Factory) -> None:
    lab = make()
    assert lab.server.handle(request(MessageType.OFFER, STRANGER), T0) is None
    bootp = request(MessageType.DISCOVER, STRANGER)
    del bootp.options[Opt.MESSAGE_TYPE]
    assert lab.server.handle(bootp, T0) is None


# ---- durability ------------------------------------------------------------------------------


def test_leases_survive_a_restart_and_are_not_given_twice(make: Factory) -> None:
    lab = make()
    bound = {mac: lab.bind(mac) for mac in (STRANGER, OTHER, WORKER)}
    asyncio.run(lab.db.flush())
    lab = restart(lab)
    for mac, address in bound.items():
        lease = lab.leases.of(mac)
        assert lease is not None
        assert lease.ip == address
        assert lease.state is LeaseState.BOUND
    newcomer = lab.handle(request(MessageType.DISCOVER, "52:54:00:aa:00:09"), T0 + 5)
    assert newcomer.address not in bound.values()
    taken = lab.handle(
        request(MessageType.REQUEST, "52:54:00:aa:00:09", requested=str(bound[STRANGER]))
    )
    assert taken.reply_type is MessageType.NAK


def test_group_commit_makes_every_queued_write_durable(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db")

    async def burst() -> None:
        waiters = []
        for i in range(50):
            row = (f"10.0.0.{i}", f"m{i}", "bound", 0)
            db.insert("leases", ("ip", "mac", "state", "updated"), row)
            if i % 10 == 0:  # plain statements queued among bulk rows
                db.write("UPDATE leases SET hostname = ? WHERE ip = ?", (f"h{i}", f"10.0.0.{i}"))
            waiters.append(asyncio.ensure_future(db.flush()))
        await asyncio.gather(*waiters)

    asyncio.run(burst())
    assert not db.dirty
    assert db.commits < 50
    other = StateDB(tmp_path / "s.db")
    assert other.query("SELECT COUNT(*) FROM leases") == [(50,)]
    assert other.query("SELECT COUNT(*) FROM leases WHERE hostname IS NOT NULL") == [(5,)]
    other.close()
    db.close()


# ---- proxy mode ------------------------------------------------------------------------------


def test_proxy_mode_answers_pxe_clients_with_boot_information_only(make: Factory) -> None:
    lab = make({"mode: full": "mode: proxy"})
    assert lab.server.handle(request(MessageType.DISCOVER, WORKER), T0) is None  # not PXE
    offer = lab.handle(request(MessageType.DISCOVER, WORKER, arch=0, vendor=PXE_VENDOR))
    assert offer.reply is not None
    assert offer.reply_type is MessageType.OFFER
    assert offer.reply.yiaddr == IPv4Address(0)
    assert offer.reply.file == b"undionly.kpxe"
    assert offer.reply.siaddr == SERVER
    assert offer.reply.options[Opt.VENDOR_CLASS] == b"PXEClient"
    assert Opt.LEASE_TIME not in offer.reply.options
    assert Opt.ROUTER not in offer.reply.options
    assert lab.leases.of(WORKER) is None
    request_67 = request(MessageType.REQUEST, WORKER, requested="10.77.0.150", vendor=PXE_VENDOR)
    assert lab.server.handle(request_67, T0) is None  # the address server's business
    boot_request = request(
        MessageType.REQUEST, WORKER, ciaddr="10.77.0.150", arch=7, vendor=PXE_VENDOR
    )
    ack = lab.handle(boot_request, port=PXE_PORT)
    assert ack.reply is not None
    assert ack.reply_type is MessageType.ACK
    assert ack.reply.file == b"ipxe.efi"
    assert ack.destination is not None
    assert (ack.destination.address, ack.destination.port) == (IPv4Address("10.77.0.150"), 4011)
    from_port_68 = lab.server.handle(boot_request, T0, PXE_PORT, (IPv4Address("10.77.0.150"), 68))
    assert from_port_68 is not None
    assert from_port_68.destination is not None
    assert from_port_68.destination.port == 68  # PXE 2.1: the client's source port


def test_reload_keeps_leases_and_applies_new_reservations(make: Factory) -> None:
    lab = make()
    address = lab.bind(STRANGER)
    newcomer = '  - mac: "52:54:00:aa:00:02"\n    cur_host_name: "worker9"\n    ip: 10.77.0.20\n'
    lab.backend.use(load_cluster_text(EXAMPLE_TEXT + newcomer))
    assert lab.leases.holder(address, T0) == STRANGER
    renew = lab.handle(request(MessageType.REQUEST, STRANGER, ciaddr=str(address)), T0 + 60)
    assert renew.reply_type is MessageType.ACK
    offer = lab.handle(request(MessageType.DISCOVER, OTHER), T0 + 60)
    assert offer.reply is not None
    assert offer.address == IPv4Address("10.77.0.20")
    assert offer.reply.options[Opt.HOSTNAME] == b"worker9"
