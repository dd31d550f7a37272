"""DHCP in the daemon: the model-backed policy, the lease table, the service wiring."""
