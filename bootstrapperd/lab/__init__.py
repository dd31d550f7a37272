"""Test and demo infrastructure, never imported by the daemon: network namespaces (``netlab``),
the virtual-machine boot lab (``vm``) and ``bootstrapperd demo``."""
