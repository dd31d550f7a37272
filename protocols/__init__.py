"""Sans-IO protocol codecs and state machines (DHCP, TFTP, DNS) and their thin asyncio endpoints.

Nothing here imports ``bootstrapperd``, aiohttp or the cluster model: each protocol defines the
small interfaces it needs (what boot file, what address, what records) and the application
implements them.
"""

from .errors import MalformedPacket

__all__ = ["MalformedPacket"]
