"""The VM lab: PXE-booting QEMU machines against a bootstrapper inside network namespaces.

Used by the end-to-end tests, ``bootstrapperd demo`` and the boot benchmark. Its "OS" is a
stand-in that boots in seconds: a Debian kernel (``linux-image-amd64``, unpacked, never
installed) and a busybox initramfs built here, published as a signed release in a local mirror
from which ``bootstrapperd-pack`` makes the bsroot.
"""
