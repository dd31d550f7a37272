"""The one error type every decoder raises for bad input."""


class MalformedPacket(ValueError):
    """Input that is not a valid packet of the protocol. Endpoints count it, log it at debug,
    and keep serving; ``datagram_received`` never lets it (or anything else) escape."""
