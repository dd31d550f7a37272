"""What the cluster runs and where nodes pull it from, derived from the model: every image the
nodes run (the description's ``images`` plus defaults for what it leaves out) and the address of
the bootstrapper's registry. Pack pulls these images, the registry serves them, the templates
name them."""

from __future__ import annotations

from .types import ClusterModel

__all__ = ["CONTROL_PLANE", "DEFAULT_IMAGES", "REGISTRY_PORT", "cluster_images", "registry_name"]

# Images the templates run when the description's `images` does not name them.
DEFAULT_IMAGES = {
    "etcd": "quay.io/coreos/etcd:v3.5.17",
    "flannel": "docker.io/flannel/flannel:v0.25.1",
    "pause": "registry.k8s.io/pause:3.10",
}
REGISTRY_PORT = 5000
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def cluster_images(model: ClusterModel) -> dict[str, str]:
    """Every image the nodes run, as originally named (what pack pulls and the registry serves):
    the description's ``images`` plus defaults for what it leaves out."""
    images = {**DEFAULT_IMAGES, **model.images}
    if "hyperkube" not in images:
        for component in CONTROL_PLANE:
            images.setdefault(component, f"registry.k8s.io/{component}:{model.kubernetes_version}")
    return images


def registry_name(model: ClusterModel) -> str:
    """``<dockerdomain>:5000``: the registry's name in every reference nodes pull."""
    return f"{model.dockerdomain}:{REGISTRY_PORT}"
