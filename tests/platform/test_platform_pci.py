"""PCI configuration space: capabilities, port type, ACS, and reads cut short by permissions."""

from __future__ import annotations

from nvmf.platform.pci import ConfigSpace, PortType, acs_flags
from tests.platform.make_trees import ACS_KERNEL_ENABLED, ACS_SUPPORTED, config_space


def test_port_type_and_acs_from_a_downstream_port() -> None:
    cs = ConfigSpace(
        config_space(
            0x10B5, 0x8747, 0x060400, port_type=0x6, acs=(ACS_SUPPORTED, ACS_KERNEL_ENABLED)
        )
    )
    assert cs.port_type() is PortType.DOWNSTREAM_PORT
    acs = cs.acs()
    assert acs is not None and acs.offset == 0x100
    assert acs.supported == ["SV", "RR", "CR", "UF", "EC", "DT"]
    assert acs.enabled == ["SV", "RR", "CR", "UF"] and acs.redirects


def test_egress_control_alone_counts_as_redirect() -> None:
    cs = ConfigSpace(config_space(0x8086, 0x2030, 0x060400, port_type=0x4, acs=(0x7D, 0x21)))
    acs = cs.acs()
    assert acs is not None and acs.enabled == ["SV", "EC"] and acs.redirects


def test_source_validation_alone_does_not_redirect() -> None:
    cs = ConfigSpace(config_space(0x8086, 0x2030, 0x060400, port_type=0x4, acs=(0x7D, 0x01)))
    acs = cs.acs()
    assert acs is not None and not acs.redirects


def test_truncated_config_hides_capabilities_instead_of_failing() -> None:
    full = config_space(0x10B5, 0x8747, 0x060400, port_type=0x6, acs=(0x7D, 0x1D))
    cs = ConfigSpace(full[:64])  # what a non-root reader gets
    assert cs.truncated and cs.port_type() is None and cs.acs() is None
    assert cs.header[0] == 0x10B5


def test_capability_loop_terminates() -> None:
    data = bytearray(config_space(0x1234, 0x5678, 0x020000, port_type=0x0))
    data[0x41] = 0x40  # next pointer back to itself
    assert ConfigSpace(bytes(data)).capabilities() == {0x10: 0x40}


def test_acs_flag_names() -> None:
    assert acs_flags(0x7F) == ["SV", "TB", "RR", "CR", "UF", "EC", "DT"]
    assert acs_flags(0) == []
