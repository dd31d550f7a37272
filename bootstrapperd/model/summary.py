"""The one-screen summary that ``bootstrapperd check`` prints for a loaded cluster model."""

from __future__ import annotations

from . import ClusterModel, DHCPMode, Node
from .errors import by_line
from .fields import format_seconds


def _addresses(items: tuple[object, ...]) -> str:
    return ", ".join(str(i) for i in items) or "none"


def _node_address(model: ClusterModel, node: Node) -> str:
    if node.ip is None:
        return "pool"
    return f"{node.ip} (static{', in pool' if node.ip in model.pool else ''})"


def _from(source: str) -> str:
    """``(from kubernetes_version)``, ``(the default)``: a source as the summary shows it."""
    plain = source.startswith("from ") or source in ("the default", "the defaults")
    return f"({source})" if plain else f"(from {source})"


def render_summary(model: ClusterModel) -> str:
    """The summary: what will be installed and where each choice came from, the nodes, then
    the warnings in the order of the file."""
    m = model
    pool = (
        f"{m.pool.low}-{m.pool.high} ({m.pool.size} addresses, {m.pool_free_size} free for "
        "dynamic leases)"
        if m.pool.size
        else "none (static reservations only)"
    )
    dhcp = m.dhcp.mode.value
    if m.dhcp.mode is DHCPMode.FULL:
        dhcp += f"; pool {pool}; lease {format_seconds(m.lease_seconds)}"
    dhcp += f"; unknown machines: {m.dhcp.unknown_machines.value}"
    masters = ", ".join(n.hostname for n in m.masters)
    etcd = ", ".join(n.hostname for n in m.etcd_members)
    lines = [
        f"cluster {m.domain}: {len(m.nodes)} nodes, {len(m.masters)} master(s), "
        f"{len(m.etcd_members)} etcd member(s)",
        f"  bootstrapper  {m.bootstrapper}  (registry {m.dockerdomain}:5000, http port "
        f"{m.http_port})",
        f"  network       {m.network}  broadcast {m.broadcast}  routers {_addresses(m.routers)}",
        f"  DHCP          {dhcp}",
        f"  DNS           domain {m.domain}; nameservers {_addresses(m.nameservers)}; "
        f"upstream {_addresses(m.upstream_nameservers)}",
        f"  OS            {m.os.name} {m.os.channel} {m.os.version} {_from(m.os.source)}"
        + (f"; packed from {m.os.mirror}" if m.os.mirror else ""),
        f"  Kubernetes    {m.kubernetes_version} {_from(m.kubernetes_version_source)}; "
        f"masters {masters}; flannel {m.flannel_backend}",
        f"  services      {m.service_cluster_ip_range}; cluster DNS {m.cluster_dns}",
        f"  etcd          {etcd}",
        f"  images        {len(m.images)}; SSH keys {len(m.ssh_authorized_keys)}",
        "",
    ]
    rows = [("HOSTNAME", "MAC", "ADDRESS", "ROLES")]
    for node in m.nodes:
        roles = ", ".join(r.value for r in node.roles)
        rows.append((node.fqdn, node.mac, _node_address(m, node), roles))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[3]]
        lines.append("  " + "  ".join(cells))
    if m.warnings:
        lines.append("")
        lines.append(f"{len(m.warnings)} warning(s):")
        lines += [f"  {w}" for w in by_line(list(m.warnings))]
    return "\n".join(lines)
