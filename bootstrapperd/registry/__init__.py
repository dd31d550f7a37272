"""The bootstrapper's container registry at ``<dockerdomain>:5000``: run (Docker engine or a
registry binary, supervised), or reached (an external URL), and filled from
``bsroot/images/*.tar`` over the registry HTTP API. See docs/registry.md."""

from .service import RegistryService

__all__ = ["RegistryService"]
