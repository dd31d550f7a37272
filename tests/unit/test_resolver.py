"""The machine resolver: one view per machine (known or not, served or not, names, roles,
current addresses and where they come from, what it boots), and the two rules it owns: the
unknown-machine policy and the current-address rule."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapperd.machines.leases import LeaseStore
from bootstrapperd.machines.resolver import (
    AddressSource,
    MachineView,
    Resolver,
    is_served,
    machine_view,
)
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.model import ClusterModel, load_cluster_file
from bootstrapperd.model.types import Role
from tests.conftest import EXAMPLE

MASTER = "52:54:00:77:00:10"  # static 10.77.0.10
WORKER = "52:54:00:77:00:11"  # from the pool
PLAIN = "52:54:00:77:00:12"  # listed, hostname from its MAC
STRANGER = "52:54:00:ab:cd:ef"  # not listed
NOW = 1_000_000.0


def ignoring(tmp_path: Path) -> ClusterModel:
    text = EXAMPLE.read_text().replace("unknown_machines: allow", "unknown_machines: ignore")
    if "unknown_machines: ignore" not in text:
        text += "\ndhcp:\n  unknown_machines: ignore\n"
    path = tmp_path / "ignore.yml"
    path.write_text(text)
    model = load_cluster_file(path)
    assert model.dhcp.unknown_machines.value == "ignore"
    return model


class Lab:
    def __init__(self, tmp: Path, model: ClusterModel | None = None) -> None:
        self.model = model or load_cluster_file(EXAMPLE)
        self.db = StateDB(tmp / "state.db")
        self.leases = LeaseStore(self.db)
        self.resolver = Resolver(lambda: self.model, self.leases, clock=lambda: NOW)

    def bind(self, mac: str, ip: str, expires: float | None = NOW + 600) -> None:
        self.leases.bind(IPv4Address(ip), mac, NOW - 1, expires, None, None)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    yield lab
    lab.db.close()


def test_a_listed_machine_with_a_reservation(lab: Lab) -> None:
    view = lab.resolver.machine(MASTER)
    assert (view.known, view.served) == (True, True)
    assert view.node is not None
    assert view.hostname == view.node.hostname
    assert view.fqdn == view.node.fqdn
    assert Role.MASTER in view.roles
    assert view.ip == IPv4Address("10.77.0.10")
    assert view.address_source is AddressSource.STATIC
    assert view.static_ip == IPv4Address("10.77.0.10")
    assert view.lease is None


def test_an_unknown_machine_is_a_worker_named_after_its_mac(lab: Lab) -> None:
    view = lab.resolver.machine(STRANGER)
    assert (view.known, view.served) == (False, True)
    assert view.hostname == "52-54-00-ab-cd-ef"
    assert view.fqdn == f"52-54-00-ab-cd-ef.{lab.model.domain}"
    assert view.roles == (Role.WORKER,)
    assert (view.ip, view.address_source) == (None, AddressSource.NONE)


def test_unknown_machines_ignored_are_not_served_and_boot_nothing(tmp_path: Path) -> None:
    model = ignoring(tmp_path)
    assert not is_served(model, STRANGER)
    assert is_served(model, WORKER)
    view = machine_view(model, STRANGER)
    assert not view.served
    assert view.boot("http://b") is None
    assert machine_view(model, WORKER).boot("http://b") is not None


def test_a_bound_lease_is_the_current_address_an_offer_is_not(lab: Lab) -> None:
    lab.leases.offer(IPv4Address("10.77.0.100"), WORKER, NOW, 60)
    view = lab.resolver.machine(WORKER)
    assert view.ip is None  # an offer promises nothing
    assert view.lease is not None
    assert view.lease.ip == IPv4Address("10.77.0.100")
    assert lab.resolver.at("10.77.0.100") is None
    lab.bind(WORKER, "10.77.0.100")
    view = lab.resolver.machine(WORKER)
    assert (view.ip, view.address_source) == (IPv4Address("10.77.0.100"), AddressSource.LEASE)
    assert view.valid_until(IPv4Address("10.77.0.100")) == NOW + 600
    at = lab.resolver.at("10.77.0.100")
    assert at is not None
    assert at.mac == WORKER


def test_an_ended_lease_is_no_address(lab: Lab) -> None:
    lab.bind(WORKER, "10.77.0.100", expires=NOW - 0.5)
    assert lab.resolver.machine(WORKER).ip is None
    assert lab.resolver.at("10.77.0.100") is None
    lab.bind(PLAIN, "10.77.0.101")
    lab.leases.release(IPv4Address("10.77.0.101"), PLAIN, NOW)
    assert lab.resolver.machine(PLAIN).ip is None
    assert not lab.resolver.owns(PLAIN, "10.77.0.101")


def test_a_reservation_and_a_lease_still_held_are_both_the_machines(lab: Lab) -> None:
    # A node given a reservation by a reload while it still holds its pool lease.
    lab.bind(MASTER, "10.77.0.120")
    view = lab.resolver.machine(MASTER)
    assert view.ip == IPv4Address("10.77.0.10")  # the reservation is the address it is shown
    assert [source for _ip, source in view.addresses] == [
        AddressSource.STATIC,
        AddressSource.LEASE,
    ]
    assert lab.resolver.owns(MASTER, "10.77.0.10")
    assert lab.resolver.owns(MASTER, "10.77.0.120")
    assert view.valid_until(IPv4Address("10.77.0.10")) == float("inf")
    assert view.valid_until(IPv4Address("10.77.0.99")) == 0.0


def test_an_address_is_owned_only_by_its_machine(lab: Lab) -> None:
    lab.bind(WORKER, "10.77.0.100")
    assert lab.resolver.owns(WORKER, "10.77.0.100")
    assert not lab.resolver.owns(PLAIN, "10.77.0.100")
    assert not lab.resolver.owns(WORKER, "10.77.0.10")  # the master's reservation
    assert lab.resolver.owns(MASTER, "10.77.0.10")
    assert not lab.resolver.owns(WORKER, "not an address")
    assert lab.resolver.at("::1") is None


def test_a_machine_that_moved_no_longer_owns_its_old_address(lab: Lab) -> None:
    lab.bind(WORKER, "10.77.0.100")
    lab.bind(WORKER, "10.77.0.101")  # one address per machine: the first is released
    assert not lab.resolver.owns(WORKER, "10.77.0.100")
    assert lab.resolver.owns(WORKER, "10.77.0.101")


def test_names_nodes_by_hostname_and_unknown_machines_by_their_mac(lab: Lab) -> None:
    worker = lab.model.nodes_by_mac[WORKER]
    view = lab.resolver.named(worker.hostname)
    assert view is not None
    assert view.mac == WORKER
    stranger = lab.resolver.named("52-54-00-ab-cd-ef")
    assert stranger is not None
    assert stranger.mac == STRANGER
    assert lab.resolver.named("52-54-00-77-00-11") is None  # a node answers to its hostname
    assert lab.resolver.named("no-such-host") is None


def test_names_of_unknown_machines_are_not_answered_when_they_are_ignored(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, ignoring(tmp_path))
    try:
        lab.bind(STRANGER, "10.77.0.130")
        assert lab.resolver.named("52-54-00-ab-cd-ef") is None
        at = lab.resolver.at("10.77.0.130")
        assert at is not None
        assert not at.served
    finally:
        lab.db.close()


def test_a_reload_is_seen_at_once(lab: Lab, tmp_path: Path) -> None:
    assert lab.resolver.machine(STRANGER).served
    lab.model = ignoring(tmp_path)
    assert not lab.resolver.machine(STRANGER).served
    assert not lab.resolver.is_served(STRANGER)


def test_the_view_is_frozen_and_its_lease_a_copy(lab: Lab) -> None:
    lab.bind(WORKER, "10.77.0.100")
    view: MachineView = lab.resolver.machine(WORKER)
    with pytest.raises(FrozenInstanceError):
        view.hostname = "other"  # type: ignore[misc]
    lab.leases.release(IPv4Address("10.77.0.100"), WORKER, NOW)
    assert view.lease is not None
    assert view.lease.state.value == "bound"


def test_the_boot_spec_points_at_the_machines_own_config(lab: Lab) -> None:
    spec = lab.resolver.machine(WORKER).boot("http://10.77.0.1")
    assert spec is not None
    assert spec.mac == WORKER
    assert spec.hostname == lab.model.nodes_by_mac[WORKER].hostname
    assert "ignition.config.url=http://10.77.0.1/ignition/52-54-00-77-00-11.json" in spec.args


def test_a_reservation_another_machine_still_leases_is_not_the_nodes(lab: Lab) -> None:
    """A reload reserved 10.77.0.10 for the master while a stranger leases it: the address is
    the stranger's until its lease ends, never the master's on the model's word alone."""
    lab.leases.bind(IPv4Address("10.77.0.10"), STRANGER, NOW - 1, NOW + 600, None, None)
    assert not lab.resolver.owns(MASTER, "10.77.0.10")
    assert lab.resolver.owns(STRANGER, "10.77.0.10")
    master = lab.resolver.machine(MASTER)
    assert master.ip is None
    at = lab.resolver.at("10.77.0.10")
    assert at is not None
    assert at.mac == STRANGER
    assert lab.resolver.conflicts() == [(MASTER, IPv4Address("10.77.0.10"), STRANGER)]
    # The stranger's lease ends: the reservation is the master's again.
    lab.leases.release(IPv4Address("10.77.0.10"), STRANGER, NOW)
    assert lab.resolver.owns(MASTER, "10.77.0.10")
    assert lab.resolver.conflicts() == []


def test_a_quarantined_reservation_stays_the_nodes(lab: Lab) -> None:
    lab.leases.quarantine(IPv4Address("10.77.0.10"), NOW - 1, NOW + 600)
    assert lab.resolver.owns(MASTER, "10.77.0.10")
    assert lab.resolver.conflicts() == []
