"""``nvmf gen-dhchap-key`` prints what ``nvme gen-dhchap-key`` prints (nvme-cli 2.3 vectors in
tests/protocol/test_dhchap.py), with nvme-cli's options."""

from __future__ import annotations

import pytest

from nvmf.cli.main import main
from nvmf.protocol.dhchap import DhchapSecret

NQN = "nqn.2014-08.org.nvmexpress:uuid:test"
SECRET = "00112233445566778899aabbccddeeff" * 2


def test_same_output_as_nvme_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-dhchap-key", "--secret", SECRET, "--hmac", "1", "--nqn", NQN]) == 0
    assert (
        capsys.readouterr().out == "DHHC-1:01:ori7PyxLj4TmXH+U0H2n9n6JjwSLdjVnqGrxVBUqGc2r4Dkr:\n"
    )


@pytest.mark.parametrize(("args", "length", "hmac"), [([], 32, 0), (["-m", "3"], 64, 3),
                         (["-l", "48"], 48, 0), (["--hmac", "2", "-n", NQN], 48, 2)])  # fmt: skip
def test_random_keys(
    capsys: pytest.CaptureFixture[str], args: list[str], length: int, hmac: int
) -> None:
    assert main(["gen-dhchap-key", *args]) == 0
    first = capsys.readouterr().out.strip()
    secret = DhchapSecret.parse(first)
    assert (len(secret.key), secret.transform) == (length, hmac)
    main(["gen-dhchap-key", *args])
    assert capsys.readouterr().out.strip() != first


def test_mismatched_length_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-dhchap-key", "-m", "2", "-l", "32"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "48-byte keys" in captured.err
    with pytest.raises(SystemExit):
        main(["gen-dhchap-key", "-l", "40"])
