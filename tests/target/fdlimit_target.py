"""A target in a process of its own that has almost no file descriptors left (issue 8).

``python -m tests.target.fdlimit_target SPARE`` starts :func:`running_target` with no offload
workers, then lowers its own ``RLIMIT_NOFILE`` so that only about ``SPARE`` descriptors remain
free, prints the port it listens on, and serves until its standard input closes.  Its log goes to
standard error, one line per record.
"""

from __future__ import annotations

import logging
import os
import resource
import sys

from tests.target.conftest import running_target


def main() -> None:
    spare = int(sys.argv[1])
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    with running_target(0) as target:
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + spare, hard))
        print(target.addr[1], flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
