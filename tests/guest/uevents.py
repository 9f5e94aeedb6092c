"""Record the kernel's nvme uevents in the guest: ``python -m tests.guest.uevents FILE``.

Listens on the kernel's uevent netlink socket (``NETLINK_KOBJECT_UEVENT``, multicast group 1:
what ``udevadm monitor --kernel`` shows, with no udev daemon needed) and appends one line per
event of the ``nvme`` subsystem to FILE: ``ACTION DEVNAME KEY=VALUE...``.  The host kernel
sends ``NVME_AEN=0x...`` with each asynchronous event a controller reports
(``nvme_aen_uevent``).  It writes ``FILE.ready`` once listening, and runs until killed.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

NETLINK_KOBJECT_UEVENT = 15


def main(path: str) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, 1))
    Path(path + ".ready").touch()
    with open(path, "a") as out:
        while True:
            fields = sock.recv(65536).split(b"\0")
            env = dict(f.decode(errors="replace").partition("=")[::2] for f in fields[1:] if f)
            if env.get("SUBSYSTEM") != "nvme":
                continue
            extra = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("NVME_"))
            out.write(f"{env.get('ACTION', '?')} {env.get('DEVNAME', '?')} {extra}\n")
            out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
