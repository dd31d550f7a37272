"""The daemon's DNS service: the cluster's names (``records``) and the service."""
