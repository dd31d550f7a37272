"""The cluster model: one immutable, validated view of cluster-desc.yml."""

from .errors import ConfigError, Problem, Severity
from .fields import canonical_mac, format_seconds, hostname_from_mac
from .load import load_cluster_file, load_cluster_text
from .types import (
    AddressPool,
    ApiserverSANs,
    ClusterModel,
    DHCPConfig,
    DHCPMode,
    Downloads,
    InstallPolicy,
    Node,
    OSConfig,
    RegistryConfig,
    RegistryMode,
    Role,
    UnknownMachines,
)

__all__ = [
    "AddressPool",
    "ApiserverSANs",
    "ClusterModel",
    "ConfigError",
    "DHCPConfig",
    "DHCPMode",
    "Downloads",
    "InstallPolicy",
    "Node",
    "OSConfig",
    "Problem",
    "RegistryConfig",
    "RegistryMode",
    "Role",
    "Severity",
    "UnknownMachines",
    "canonical_mac",
    "format_seconds",
    "hostname_from_mac",
    "load_cluster_file",
    "load_cluster_text",
]
