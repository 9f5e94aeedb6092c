"""Command opcodes and feature identifiers (NVMe Base 2.0 Figures 141, 316; NVM Command Set
1.0 Figure 28; NVMe-oF 1.1 Figure 12).  Names as in Linux ``include/linux/nvme.h``."""

from __future__ import annotations

import enum


class AdminOpcode(enum.IntEnum):
    DELETE_SQ = 0x00
    CREATE_SQ = 0x01
    GET_LOG_PAGE = 0x02
    DELETE_CQ = 0x04
    CREATE_CQ = 0x05
    IDENTIFY = 0x06
    ABORT = 0x08
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A
    ASYNC_EVENT = 0x0C
    NS_MGMT = 0x0D
    FW_COMMIT = 0x10
    FW_DOWNLOAD = 0x11
    DEV_SELF_TEST = 0x14
    NS_ATTACH = 0x15
    KEEP_ALIVE = 0x18
    DIRECTIVE_SEND = 0x19
    DIRECTIVE_RECV = 0x1A
    VIRTUAL_MGMT = 0x1C
    NVME_MI_SEND = 0x1D
    NVME_MI_RECV = 0x1E
    DBBUF = 0x7C
    FABRICS = 0x7F
    FORMAT_NVM = 0x80
    SECURITY_SEND = 0x81
    SECURITY_RECV = 0x82
    SANITIZE = 0x84
    GET_LBA_STATUS = 0x86


class IoOpcode(enum.IntEnum):
    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02
    WRITE_UNCOR = 0x04
    COMPARE = 0x05
    WRITE_ZEROES = 0x08
    DSM = 0x09
    VERIFY = 0x0C
    RESV_REGISTER = 0x0D
    RESV_REPORT = 0x0E
    RESV_ACQUIRE = 0x11
    RESV_RELEASE = 0x15
    COPY = 0x19
    FABRICS = 0x7F


class FabricsType(enum.IntEnum):
    """Fabrics Command Type (FCTYPE, SQE byte 4)."""

    PROPERTY_SET = 0x00
    CONNECT = 0x01
    PROPERTY_GET = 0x04
    AUTH_SEND = 0x05
    AUTH_RECEIVE = 0x06
    DISCONNECT = 0x08


class FeatureId(enum.IntEnum):
    ARBITRATION = 0x01
    POWER_MGMT = 0x02
    LBA_RANGE = 0x03
    TEMP_THRESH = 0x04
    ERR_RECOVERY = 0x05
    VOLATILE_WC = 0x06
    NUM_QUEUES = 0x07
    IRQ_COALESCE = 0x08
    IRQ_CONFIG = 0x09
    WRITE_ATOMIC = 0x0A
    ASYNC_EVENT = 0x0B
    AUTO_PST = 0x0C
    HOST_MEM_BUF = 0x0D
    TIMESTAMP = 0x0E
    KATO = 0x0F
    HOST_ID = 0x81
    RESV_MASK = 0x82
    RESV_PERSIST = 0x83
    WRITE_PROTECT = 0x84


#: Dataset Management attribute: Deallocate (CDW11 bit 2).
DSM_ATTR_DEALLOCATE = 1 << 2
#: Write Zeroes: Deallocate (CDW12 bit 25).
WZ_DEAC = 1 << 25
#: Read/Write: Force Unit Access (CDW12 bit 30), Limited Retry (bit 31).
RW_FUA = 1 << 30
RW_LR = 1 << 31
