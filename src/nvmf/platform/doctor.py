"""``nvmf doctor``: inspect a system (or a recorded tree of one) and build the report.

A controller this project's running target owns (an ``nvme_pci`` namespace) is not read here:
the CLI asks the target over its control socket and passes its answer in
(:attr:`DoctorOptions.target`, :mod:`nvmf.platform.target`), and the report says those facts
come from the target.

Order matters only where findings feed each other: the kernel's options decide what the nvme
driver can do with a CMB; the PCI topology, the CPU and the IOMMU decide peer-to-peer; the online
CPUs decide the queue plan.  Nothing here writes to the system except, on the live system and
unless told not to, the one register write NVMe 1.4 requires to read a CMB's size (CMBMSC.CRE,
restored afterwards; see :mod:`nvmf.platform.nvme_regs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nvmf.platform import modes
from nvmf.platform.cpus import inspect_cpus
from nvmf.platform.iommu import inspect_iommu
from nvmf.platform.kconfig import inspect_kernel
from nvmf.platform.nvme import NvmeController, inspect_nvme
from nvmf.platform.p2pdma import WHITELIST_SUMMARY, assess_pair
from nvmf.platform.pci import PciTopology
from nvmf.platform.queues import plan_queues
from nvmf.platform.rdma import inspect_rdma, probe_comp_vectors, probe_verbs
from nvmf.platform.report import Report
from nvmf.platform.sysfs import SysRoot
from nvmf.platform.target import TargetFacts


@dataclass
class DoctorOptions:
    """What to inspect and the what-if inputs of the queue plan."""

    root: str | os.PathLike[str] = "/"
    #: Cores of the host in the queue plan (default: this machine's online CPUs).
    host_cpus: int | None = None
    #: ``nvme connect -i N``; None: one per online CPU.
    nr_io_queues: int | None = None
    nr_write_queues: int = 0
    nr_poll_queues: int = 0
    #: This project's target grant; None: one per online core of the inspected machine.
    target_max_queues: int | None = None
    target_max_source: str = ""
    #: Allow the CMBMSC.CRE write needed to read CMBLOC/CMBSZ on NVMe 1.4+ controllers.
    register_writes: bool = True
    #: What this project's running target said about the SSDs it owns (None: no target
    #: answered, or it was not asked).
    target: TargetFacts | None = None


def _linux_qid_max(fs: SysRoot) -> dict[str, int]:
    """``attr_qid_max`` of each subsystem configured in the Linux target's configfs."""
    base = "/sys/kernel/config/nvmet/subsystems"
    out: dict[str, int] = {}
    for nqn in fs.listdir(base):
        value = fs.read_int(f"{base}/{nqn}/attr_qid_max", 10)
        if value is not None:
            out[nqn] = value
    return out


def diagnose(options: DoctorOptions | None = None) -> Report:
    """Inspect the system under ``options.root`` and return the full report."""
    opts = options or DoctorOptions()
    fs = SysRoot(opts.root)
    kernel = inspect_kernel(fs)
    cpus = inspect_cpus(fs)
    iommu = inspect_iommu(fs, kernel)
    topo = PciTopology.scan(fs)
    nvme = inspect_nvme(fs, topo, kernel, allow_writes=opts.register_writes, target=opts.target)
    rdma = inspect_rdma(fs, kernel.modules_loaded)
    comp_vectors = probe_comp_vectors([d.name for d in rdma]) if fs.live and rdma else {}
    p2pdma = kernel.enabled("CONFIG_PCI_P2PDMA")
    pairs = [
        assess_pair(topo, cpus, dev, ctrl, p2pdma_config=p2pdma, iommu=iommu)
        for dev in rdma
        for ctrl in nvme
    ]
    queues = plan_queues(
        this_machine_cpus=cpus.online,
        host_cpus=opts.host_cpus,
        nr_io_queues=opts.nr_io_queues,
        nr_write_queues=opts.nr_write_queues,
        nr_poll_queues=opts.nr_poll_queues,
        linux_qid_max=_linux_qid_max(fs),
        ours_max=opts.target_max_queues,
        ours_source=opts.target_max_source,
        rdma_comp_vectors=min(comp_vectors.values()) if comp_vectors else None,
    )
    verdicts = [
        modes.tcp_target(kernel),
        modes.rdma_target(kernel, rdma, probe_verbs() if fs.live else None),
        modes.software_offload(kernel, cpus, iommu, nvme),
        modes.staging_in_cmb(kernel, iommu, nvme, pairs),
        modes.sqs_in_cmb(kernel, iommu, nvme),
        modes.io_uring_media(kernel, fs.live),
    ]
    notes = []
    if fs.live and os.geteuid() != 0:
        notes.append(
            "not running as root: PCI config space beyond 64 bytes (capabilities, ACS) and "
            "BAR0 registers are unreadable, so some answers below are 'unknown'"
        )
    notes.extend(_target_notes(opts.target, nvme))
    return Report(
        root=str(fs.root),
        kernel=kernel,
        cpus=cpus,
        iommu=iommu,
        nvme=nvme,
        rdma=rdma,
        rdma_comp_vectors=comp_vectors,
        p2p=pairs,
        whitelist=WHITELIST_SUMMARY,
        queues=queues,
        modes=verdicts,
        notes=notes,
        target=opts.target,
    )


def _target_notes(target: TargetFacts | None, nvme: list[NvmeController]) -> list[str]:
    """What the report says up front about this project's running target."""
    if target is None:
        return []
    if target.error:
        return [f"this project's target answers on {target.socket}, but: {target.error}"]
    held = [c.address for c in nvme if c.target is not None]
    where = f"this project's target (pid {target.pid}, control socket {target.socket})"
    if not target.devices:
        return [f"{where} runs and owns no NVMe controller (no nvme_pci namespace)"]
    notes = []
    if held:
        notes.append(
            f"{where} owns {', '.join(held)}: what the report says of "
            f"{'it' if len(held) == 1 else 'them'} comes from the running target"
        )
    missing = [d.bdf for d in target.devices if d.bdf not in held]
    if missing:
        notes.append(f"{where} owns {', '.join(missing)}, which sysfs does not list")
    return notes
