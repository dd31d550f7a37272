"""An HTTP app over a real bsroot, state database and lease table, for aiohttp test clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address

from aiohttp.test_utils import TestClient, TestServer

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.http import HTTPContext, create_app
from bootstrapperd.machines.leases import LeaseStore
from bootstrapperd.machines.resolver import Resolver
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.machines.timeline import Timeline
from bootstrapperd.machines.tokens import TokenStore
from bootstrapperd.model.holder import ModelHolder
from bootstrapperd.render import Renderer


@dataclass
class Served:
    client: TestClient  # type: ignore[type-arg]
    context: HTTPContext
    db: StateDB

    @property
    def base(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def act_as(self, mac: str, ip: str = "127.0.0.1") -> None:
        """Bind ``ip`` (the test client's address) to ``mac``: requests now come from it."""
        self.context.leases.bind(IPv4Address(ip), mac, time.time(), None, None, None)


def make_context(root: Bsroot) -> tuple[HTTPContext, StateDB]:
    db = StateDB(root.state / "test.db")
    holder = ModelHolder.load(root.cluster_desc)
    pki = ClusterPKI(root.tls)
    leases = LeaseStore(db)
    context = HTTPContext(
        holder=holder,
        bsroot=root,
        renderer=Renderer(root, pki),
        pki=pki,
        leases=leases,
        resolver=Resolver(lambda: holder.model, leases),
        timeline=Timeline(db, lambda mac: mac in holder.model.nodes_by_mac),
        tokens=TokenStore(db),
    )
    return context, db


@asynccontextmanager
async def serve(root: Bsroot) -> AsyncIterator[Served]:
    context, db = make_context(root)
    try:
        async with TestClient(TestServer(create_app(context))) as client:
            yield Served(client, context, db)
    finally:
        db.close()
