"""The daemon's TFTP service: which files exist (``files``) and the service around the endpoint."""
