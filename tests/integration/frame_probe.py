"""Send raw Ethernet frames on an interface and print the DHCP replies seen there, as JSON.

Run inside the client namespace (``ip netns exec NS python frame_probe.py IFACE SECONDS HEX...``):
the test builds the frames with scapy, this sends them with an AF_PACKET socket and captures
every UDP frame from port 67 that arrives (promiscuously: unicast to any MAC counts) until
SECONDS have passed, so the test can check both the reply and how it was addressed.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def from_server(frame: bytes) -> bool:
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    header = (frame[14] & 0x0F) * 4
    source_port = struct.unpack_from("!H", frame, 14 + header)[0]
    return bool(source_port == 67)


def main(interface: str, seconds: float, frames: list[bytes]) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    for frame in frames:
        sock.send(frame)
    deadline = time.monotonic() + seconds
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame, address = sock.recvfrom(65535)
        except TimeoutError:
            break
        if address[2] != PACKET_OUTGOING and from_server(frame):
            seen.append(frame.hex())
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), [bytes.fromhex(h) for h in sys.argv[3:]])
