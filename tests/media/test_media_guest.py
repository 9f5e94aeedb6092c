"""The block media tests again, inside the Linux 6.1 guest: the kernel the target server runs.

``fallocate`` on a block device, ``BLKZEROOUT``, the loop driver's discard and ``O_EXCL`` claims
are kernel behaviour that changes between versions; this machine's kernel proves little about
6.1's.  One boot runs every block test (on loop devices inside the guest) and the results come
back through files in the repository.
"""

from __future__ import annotations

import pytest

from tests.guest.harness import shared_boot

SCRIPT = """
uname -r > $OUT/kernel
modprobe loop 2>> $OUT/modprobe.txt
$PY -m pytest -q -p no:cacheprovider -m "not guest" -o addopts="" \\
    --basetemp=/tmp/nvmf-media-guest \\
    tests/media/test_media_block.py tests/media/test_media_contract.py -k block \\
    > $OUT/pytest.txt 2>&1
echo $? > $OUT/rc
"""


media_block = shared_boot("media-block", SCRIPT)


@pytest.mark.guest
def test_block_media_in_the_linux_6_1_guest() -> None:
    result = media_block()
    report = result.read("pytest.txt")
    assert result.read("kernel").startswith("6.1."), result.console[-3000:]
    assert result.read("rc").strip() == "0", report[-4000:] or result.console[-4000:]
    assert " passed" in report and "failed" not in report, report[-4000:]
