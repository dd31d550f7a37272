"""Raw TFTP packets for the cases no real client produces, run inside the client namespace:

    python -m tests.integration.tftp_probe send SERVER HEX [HEX ...]
        sends each packet (hex) to SERVER:69 from one socket and prints, as JSON, every reply
        received within a second of the last send: [[source port, hex], ...]

    python -m tests.integration.tftp_probe stranger SERVER FILE
        fetches FILE lock-step (no options) from one socket while a second socket injects an
        ACK into the transfer; prints JSON {"stranger_reply": hex, "data": hex, "ports": [...]}

Only the packet formats of RFC 1350 are built here, by hand, independently of the codec under
test.
"""

from __future__ import annotations

import json
import socket
import struct
import sys

TIMEOUT = 1.0


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind(("0.0.0.0", 0))
    return sock


def send(server: str, packets: list[bytes]) -> list[tuple[int, str]]:
    sock = _socket()
    replies: list[tuple[int, str]] = []
    for packet in packets:
        sock.sendto(packet, (server, 69))
    while True:
        try:
            data, source = sock.recvfrom(65536)
        except TimeoutError:
            return replies
        replies.append((source[1], data.hex()))


def stranger(server: str, name: str) -> dict[str, object]:
    client = _socket()
    intruder = _socket()
    client.sendto(struct.pack("!H", 1) + name.encode() + b"\0octet\0", (server, 69))
    received = bytearray()
    ports: set[int] = set()
    stranger_reply = ""
    expected = 1
    while True:
        data, source = client.recvfrom(65536)
        opcode, block = struct.unpack("!HH", data[:4])
        if opcode != 3:
            raise SystemExit(f"unexpected packet {data.hex()}")
        ports.add(source[1])
        if block != expected & 0xFFFF:
            continue
        received += data[4:]
        if expected == 1:
            # A packet from an address/port the transfer does not belong to, mid-transfer.
            intruder.sendto(struct.pack("!HH", 4, 1), source)
            reply, _ = intruder.recvfrom(65536)
            stranger_reply = reply.hex()
        client.sendto(struct.pack("!HH", 4, block), source)
        if len(data) - 4 < 512:
            break
        expected += 1
    return {"stranger_reply": stranger_reply, "data": received.hex(), "ports": sorted(ports)}


def main(argv: list[str]) -> int:
    command, server, *rest = argv
    if command == "send":
        print(json.dumps(send(server, [bytes.fromhex(h) for h in rest])))
    elif command == "stranger":
        print(json.dumps(stranger(server, rest[0])))
    else:
        raise SystemExit(f"unknown command {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
