"""bootstrapperd: DHCP, TFTP, DNS and HTTP for a bare-metal Kubernetes cluster, from one model."""

__version__ = "0.1.0"
