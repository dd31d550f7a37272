"""The facts the node templates are rendered from, taken from the one cluster model.

Everything a template may use is built here, so that a template never computes cluster facts
itself (and a site's override cannot get them wrong): the machine, the cluster, the images as
the bootstrapper's registry serves them, the Kubernetes version, the update policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..machines.resolver import MachineView
from ..model import ClusterModel
from ..model.images import CONTROL_PLANE, cluster_images, registry_name
from ..oci.reference import local_reference

__all__ = [
    "POD_NETWORK",
    "cluster_facts",
    "images_facts",
    "local_image",
    "node_facts",
]

POD_NETWORK = "10.1.0.0/16"  # flannel's network, as Sextant set it


def local_image(model: ClusterModel, original: str) -> str:
    """What nodes pull: ``original`` on the bootstrapper's registry, named as the pusher names
    it (a reference the pusher cannot name is kept as written, and fails visibly there)."""
    try:
        return local_reference(registry_name(model), original)
    except ValueError:
        return f"{registry_name(model)}/{original}"


def _control_plane(model: ClusterModel, images: Mapping[str, str]) -> dict[str, Any]:
    """Image and command of each control-plane component: its own image, or Sextant's hyperkube."""
    parts: dict[str, Any] = {}
    for component in CONTROL_PLANE:
        key = component.replace("-", "_")
        if component in images:
            parts[key] = {"image": local_image(model, images[component]), "command": [component]}
        else:
            sub = component.removeprefix("kube-")
            parts[key] = {
                "image": local_image(model, images["hyperkube"]),
                "command": ["/hyperkube", sub],
            }
    return parts


def _apiserver_host(model: ClusterModel) -> str:
    if model.kube_master_dns:
        return model.kube_master_dns[0]
    if model.masters:
        return model.masters[0].fqdn
    if model.kube_master_ip:
        return model.kube_master_ip[0]
    return f"kubernetes.{model.domain}"


def cluster_facts(model: ClusterModel, server: str) -> dict[str, Any]:
    names = [model.dockerdomain]
    for name in (model.dockerdomain, "bootstrapper"):
        if "." not in name:
            names.append(f"{name}.{model.domain}")
    names.append("bootstrapper")
    return {
        "domain": model.domain,
        "bootstrapper": str(model.bootstrapper),
        "dockerdomain": model.dockerdomain,
        "registry": registry_name(model),
        "registry_names": list(dict.fromkeys(names)),
        "cluster_dns": str(model.cluster_dns),
        "cluster_domain": model.cluster_domain,
        "service_range": str(model.service_cluster_ip_range),
        "pod_network": POD_NETWORK,
        "flannel_backend": model.flannel_backend,
        "ingress_hostnetwork": model.ingress_hostnetwork,
        "set_ntp": model.set_ntp,
        "apiserver_url": f"https://{_apiserver_host(model)}:6443",
        "masters": [n.hostname for n in model.masters],
        "etcd_initial_cluster": model.etcd_initial_cluster,
        "etcd_gateway_endpoints": ",".join(f"{n.etcd_address}:2379" for n in model.etcd_members),
        "server": server,
    }


def node_facts(view: MachineView) -> dict[str, Any]:
    """The machine: a node of the model, or an unknown machine installed as a worker."""
    node = view.node
    if node is None:
        return {
            "known": False,
            "mac": view.mac,
            "hostname": view.hostname,
            "fqdn": view.fqdn,
            "roles": [str(r) for r in view.roles],
            "ip": None,
            "is_master": False,
            "etcd_member": False,
            "ingress": False,
            "ceph_monitor": False,
            "flannel_iface": None,
            "etcd_address": view.fqdn,
            "labels": ["bootstrapperd.io/role=worker"],
        }
    labels = [f"bootstrapperd.io/role={'master' if node.kube_master else 'worker'}"]
    if node.ingress_label:
        labels.append("role=ingress")  # Sextant's label, which its ingress manifests select
    if node.ceph_monitor:
        labels.append("bootstrapperd.io/ceph-monitor=true")
    return {
        "known": True,
        "mac": node.mac,
        "hostname": node.hostname,
        "fqdn": node.fqdn,
        "roles": [str(r) for r in node.roles],
        "ip": str(node.ip) if node.ip is not None else None,
        "is_master": node.kube_master,
        "etcd_member": node.etcd_member,
        "ingress": node.ingress_label,
        "ceph_monitor": node.ceph_monitor,
        "flannel_iface": node.flannel_iface,
        "etcd_address": node.etcd_address,
        "labels": labels,
    }


def images_facts(model: ClusterModel) -> dict[str, Any]:
    images = cluster_images(model)
    facts: dict[str, Any] = {
        name.replace("-", "_"): local_image(model, ref) for name, ref in images.items()
    }
    return {"images": facts, "control_plane": _control_plane(model, images)}
