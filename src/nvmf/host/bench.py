"""A fio-like I/O benchmark on a connected :class:`~nvmf.host.controller.Controller`.

The model is fio's: ``numjobs`` jobs, each on its own I/O queue (one TCP connection), each keeping
``iodepth`` commands in flight with one coroutine per slot; a job works on its own
``1/numjobs`` slice of the range ``[offset, offset + size)`` (fio's ``offset_increment``), in
``bs``-byte units, sequentially (``read``, ``write``) or at random (``randread``, ``randwrite``,
``randrw`` with ``rwmixread`` percent reads).  The run is time based: it stops issuing after
``runtime`` seconds and waits for what is in flight.  Every command's latency (submission to
completion, as the host sees it) is recorded, and the summary gives IOPS, bandwidth and
percentiles, fio's latency distribution, the standard deviation, and this process's CPU use over
the run (fio's ``usr``/``sys``/``ctx``/``majf``/``minf``).  A ``stop`` event ends the run early
(Ctrl-C): what was measured up to then is the result, marked ``interrupted``.

``verify`` checks data end to end, like fio's ``verify=crc32c`` with a header: every written unit
starts with a 32-byte header (magic, LBA, seed, generation, CRC32C of the whole unit with the CRC
field taken out) and its payload is a slice of a seeded random pool that differs per write.
Units are never accessed by two commands at once within a job, and jobs do not overlap, so each
unit's last completed write is known: a read must return exactly that generation (a lost write,
a misplaced write or a torn one is caught, not only a corrupted one).  Workloads that read are
preceded by a prefill that writes every unit (generation 0); workloads that write are followed by
a pass that reads every written unit back.
"""

from __future__ import annotations

import array
import asyncio
import math
import random
import resource
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from nvmf.host.controller import Controller, NamespaceGeometry
from nvmf.host.errors import HostError
from nvmf.wire.tcp import crc32c

RW_MODES = ("read", "write", "randread", "randwrite", "randrw")

#: The verify header at the start of every unit: magic, LBA, seed, generation, CRC32C, reserved.
VERIFY_HEADER = struct.Struct("<8sQIIII")
assert VERIFY_HEADER.size == 32
VERIFY_MAGIC = b"NVMFBNCH"
_CRC_OFFSET = 24
_POOL_EXTRA = 64 * 1024
#: Mismatches described in the result (all are counted).
MAX_REPORTED_MISMATCHES = 10


@dataclass(frozen=True)
class BenchSpec:
    """What to run; field names are fio's."""

    rw: str = "randread"
    bs: int = 4096
    iodepth: int = 32
    numjobs: int = 1
    runtime: float = 5.0
    #: Bytes of the range the jobs share; ``None``: from ``offset`` to the namespace's end.
    size: int | None = None
    offset: int = 0
    nsid: int = 1
    verify: bool = False
    rwmixread: int = 50
    seed: int | None = None

    def validate(self) -> None:
        """:class:`ValueError` naming the option (``--bs``...) that is out of range."""
        if self.rw not in RW_MODES:
            raise ValueError(f"--rw: {self.rw!r} is not one of {', '.join(RW_MODES)}")
        if self.bs <= 0:
            raise ValueError(f"--bs: {self.bs} must be positive")
        if not 1 <= self.iodepth <= 65535:
            raise ValueError(f"--iodepth: {self.iodepth} is not 1-65535")
        if not 1 <= self.numjobs <= 1024:
            raise ValueError(f"--numjobs: {self.numjobs} is not 1-1024")
        if self.runtime <= 0:
            raise ValueError(f"--runtime: {self.runtime} must be positive")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"--size: {self.size} must be positive")
        if self.offset < 0:
            raise ValueError(f"--offset: {self.offset} must not be negative")
        if not 0 <= self.rwmixread <= 100:
            raise ValueError(f"--rwmixread: {self.rwmixread} is not 0-100")

    @property
    def reads(self) -> bool:
        return self.rw in ("read", "randread") or (self.rw == "randrw" and self.rwmixread > 0)

    @property
    def writes(self) -> bool:
        return self.rw in ("write", "randwrite") or (self.rw == "randrw" and self.rwmixread < 100)


#: The completion latency percentiles fio reports by default (``percentile_list``).
FIO_PERCENTILES = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0,
                   99.5, 99.9, 99.95, 99.99)  # fmt: skip
#: fio's latency distribution buckets, by unit: a latency counts in the first bucket whose bound
#: (in that unit) it does not exceed; the ``ms`` row ends with everything of 2000 ms or more.
LATENCY_BUCKETS = (
    ("ns", 1, (2, 4, 10, 20, 50, 100, 250, 500, 750, 1000)),
    ("us", 1000, (2, 4, 10, 20, 50, 100, 250, 500, 750, 1000)),
    ("ms", 1_000_000, (2, 4, 10, 20, 50, 100, 250, 500, 750, 1000, 2000)),
)


def _nearest_rank(ordered: list[int], q: float) -> int:
    """The ``q`` percentile of ``ordered`` by nearest rank, ceil(q% of n), computed exactly."""
    n = len(ordered)
    rank = -(-round(q * 1000) * n // 100_000)
    return ordered[min(n - 1, max(0, rank - 1))]


@dataclass
class LatencySummary:
    """Latency statistics in microseconds: fio's min/max/avg/stdev and its percentiles."""

    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    p99_9: float
    max: float
    #: Sample standard deviation (fio's ``stdev``), 0 for fewer than two samples.
    stdev: float = 0.0
    #: Samples (fio's ``N``).
    n: int = 0
    #: :data:`FIO_PERCENTILES` -> latency.
    percentiles: dict[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, samples_ns: array.array[int]) -> LatencySummary:
        if not samples_ns:
            return cls(0, 0, 0, 0, 0, 0, 0)
        ordered = sorted(samples_ns)
        n = len(ordered)
        mean_ns = sum(ordered) / n
        var = sum((x - mean_ns) ** 2 for x in ordered) / (n - 1) if n > 1 else 0.0
        return cls(
            min=ordered[0] / 1000,
            mean=mean_ns / 1000,
            p50=_nearest_rank(ordered, 50) / 1000,
            p90=_nearest_rank(ordered, 90) / 1000,
            p99=_nearest_rank(ordered, 99) / 1000,
            p99_9=_nearest_rank(ordered, 99.9) / 1000,
            max=ordered[-1] / 1000,
            stdev=math.sqrt(var) / 1000,
            n=n,
            percentiles={q: _nearest_rank(ordered, q) / 1000 for q in FIO_PERCENTILES},
        )


def latency_distribution(samples_ns: array.array[int]) -> dict[str, dict[str, float]]:
    """fio's ``latency_ns``/``latency_us``/``latency_ms``: percent of the I/Os in each bucket
    (a latency of at least 2000 ms counts under ``ms`` ``">=2000"``)."""
    bounds: list[tuple[str, str, int]] = []
    for unit, scale, limits in LATENCY_BUCKETS:
        bounds += [(unit, str(limit), limit * scale) for limit in limits]
    counts = [0] * len(bounds)
    over = 0
    ordered = sorted(samples_ns)
    i = 0
    for b, (_, _, limit_ns) in enumerate(bounds):
        start = i
        while i < len(ordered) and ordered[i] <= limit_ns:
            i += 1
        counts[b] = i - start
    over = len(ordered) - i
    total = max(1, len(ordered))
    out: dict[str, dict[str, float]] = {unit: {} for unit, _, _ in LATENCY_BUCKETS}
    for (unit, label, _), count in zip(bounds, counts, strict=True):
        out[unit][label] = 100 * count / total
    out["ms"][">=2000"] = 100 * over / total
    return out


@dataclass
class CpuUsage:
    """This process's CPU use over the timed phase, as fio's ``cpu`` line gives it."""

    usr: float  # percent of the elapsed time spent in user mode
    sys: float  # percent in the kernel
    ctx: int  # context switches, voluntary and not
    majf: int  # major page faults
    minf: int  # minor page faults

    @classmethod
    def between(
        cls, before: resource.struct_rusage, after: resource.struct_rusage, elapsed: float
    ) -> CpuUsage:
        secs = max(elapsed, 1e-9)
        return cls(
            usr=100 * (after.ru_utime - before.ru_utime) / secs,
            sys=100 * (after.ru_stime - before.ru_stime) / secs,
            ctx=(after.ru_nvcsw + after.ru_nivcsw) - (before.ru_nvcsw + before.ru_nivcsw),
            majf=after.ru_majflt - before.ru_majflt,
            minf=after.ru_minflt - before.ru_minflt,
        )


@dataclass
class DirectionResult:
    """One direction's totals over the timed phase."""

    ios: int
    bytes: int
    iops: float
    mb_s: float  # 10^6 bytes per second
    mib_s: float
    lat_us: LatencySummary


@dataclass
class VerifyResult:
    checked: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """One progress sample: rates over the last interval, and how far the run is."""

    elapsed: float
    read_iops: float
    read_mb_s: float
    write_iops: float
    write_mb_s: float
    #: The run's planned length (``runtime``), for the percentage and the ETA.
    runtime: float = 0.0

    @property
    def eta(self) -> float:
        """Seconds left of the planned run."""
        return max(0.0, self.runtime - self.elapsed)


@dataclass
class BenchResult:
    spec: BenchSpec
    elapsed: float
    block_size: int
    read: DirectionResult | None
    write: DirectionResult | None
    verify: VerifyResult | None
    error: str | None = None
    #: The run was stopped early (``stop`` set, Ctrl-C): the numbers cover what ran.
    interrupted: bool = False
    cpu: CpuUsage | None = None
    #: fio's latency distribution over every I/O of the run (:func:`latency_distribution`).
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    #: One :class:`Progress` per second of the timed phase (IOPS over time).
    samples: list[Progress] = field(default_factory=list)
    #: What the run could not do as asked (iodepth above the queue size, shared queues).
    warnings: list[str] = field(default_factory=list)
    #: I/O queues the jobs ran on, and the commands each may have outstanding.
    io_queues: int = 0
    queue_depth: int = 0
    #: Keep Alive commands the host sent during the timed phase (none while I/O completes when
    #: the controller does Traffic Based Keep Alive).
    keep_alives: int = 0
    #: Every I/O's latency in nanoseconds, per direction (for plots; not in :meth:`to_json`).
    lat_ns: dict[str, array.array[int]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """This project's compact summary (``nvmf bench --json``; ``bench/run.py`` reads it)."""
        out: dict[str, Any] = {
            "spec": asdict(self.spec),
            "elapsed": self.elapsed,
            "block_size": self.block_size,
            "read": None,
            "write": None,
            "verify": None if self.verify is None else asdict(self.verify),
            "error": self.error,
            "interrupted": self.interrupted,
            "keep_alives": self.keep_alives,
        }
        for name, d in (("read", self.read), ("write", self.write)):
            if d is None:
                continue
            lat = d.lat_us
            out[name] = {
                "ios": d.ios,
                "bytes": d.bytes,
                "iops": d.iops,
                "mb_s": d.mb_s,
                "mib_s": d.mib_s,
                "lat_us": {
                    "min": lat.min,
                    "mean": lat.mean,
                    "stdev": lat.stdev,
                    "p50": lat.p50,
                    "p90": lat.p90,
                    "p99": lat.p99,
                    "p99.9": lat.p99_9,
                    "max": lat.max,
                },
            }
        return out


class _Stats:
    __slots__ = ("bytes", "ios", "lat")

    def __init__(self) -> None:
        self.ios = 0
        self.bytes = 0
        self.lat: array.array[int] = array.array("q")

    def result(self, elapsed: float) -> DirectionResult:
        secs = max(elapsed, 1e-9)
        return DirectionResult(
            ios=self.ios,
            bytes=self.bytes,
            iops=self.ios / secs,
            mb_s=self.bytes / secs / 1e6,
            mib_s=self.bytes / secs / (1 << 20),
            lat_us=LatencySummary.of(self.lat),
        )


class _Job:
    """One job: a slice of the range, a queue, a unit picker, the verify bookkeeping."""

    def __init__(
        self,
        bench: _Bench,
        index: int,
        first_unit: int,
        units: int,
    ) -> None:
        self.bench = bench
        self.index = index
        self.queue = index
        self.first_unit = first_unit
        self.units = units
        self.cursor = 0
        self.rng = random.Random(bench.seed * 1000003 + index)
        #: With verify, no two commands of the job touch one unit at once.
        self.exclusive = bench.spec.verify
        self.busy: set[int] = set()
        #: unit -> generation of its last completed write
        self.expected: dict[int, int] = {}
        self.gen = 0

    def pick(self) -> int:
        """The next unit (relative to the job's slice) no other command of this job is using."""
        spec = self.bench.spec
        busy = self.busy
        if not self.exclusive:
            if spec.rw in ("read", "write"):
                unit = self.cursor
                self.cursor = (unit + 1) % self.units
                return unit
            return self.rng.randrange(self.units)
        if spec.rw in ("read", "write"):
            for _ in range(self.units):
                unit = self.cursor
                self.cursor = (self.cursor + 1) % self.units
                if unit not in busy:
                    return unit
        else:
            randrange = self.rng.randrange
            for _ in range(64):
                unit = randrange(self.units)
                if unit not in busy:
                    return unit
        raise HostError("no free unit: the range is smaller than iodepth units")


class _Bench:
    def __init__(self, ctrl: Controller, spec: BenchSpec, geo: NamespaceGeometry) -> None:
        self.ctrl = ctrl
        self.spec = spec
        self.geo = geo
        self.seed = spec.seed if spec.seed is not None else random.getrandbits(31)
        self.blocks_per_unit = spec.bs // geo.block_size
        start = spec.offset
        end = geo.size_bytes if spec.size is None else spec.offset + spec.size
        if end > geo.size_bytes:
            raise ValueError(
                f"--size/--offset: {end} bytes is past namespace {geo.nsid}'s "
                f"{geo.size_bytes} bytes"
            )
        if start % spec.bs:
            raise ValueError(f"--offset: {start} is not a multiple of --bs {spec.bs}")
        total_units = (end - start) // spec.bs
        per_job = total_units // spec.numjobs
        if per_job < 1:
            raise ValueError(
                f"--size: {end - start} bytes hold {total_units} units of {spec.bs}, fewer than "
                f"--numjobs {spec.numjobs}"
            )
        if spec.verify and per_job < spec.iodepth:
            raise ValueError(
                f"--size: with --verify each job needs at least --iodepth ({spec.iodepth}) units "
                f"of --bs; it has {per_job}"
            )
        self.first_unit = start // spec.bs
        self.jobs = [
            _Job(self, j, self.first_unit + j * per_job, per_job) for j in range(spec.numjobs)
        ]
        rng = random.Random(self.seed)
        self.pool = memoryview(rng.randbytes(spec.bs + _POOL_EXTRA))
        self.read_stats = _Stats()
        self.write_stats = _Stats()
        self.verify = VerifyResult() if spec.verify else None
        self.stop = False
        self.interrupted = False
        self.samples: list[Progress] = []
        self.error: BaseException | None = None

    # -- data pattern ---------------------------------------------------------------------------
    def fill(self, buf: bytearray, unit: int, gen: int) -> None:
        """The verify pattern of ``unit`` at generation ``gen`` into ``buf``."""
        bs = self.spec.bs
        k = ((unit * 2654435761) ^ (gen * 40503)) % _POOL_EXTRA
        buf[32:] = self.pool[k : k + bs - 32]
        lba = unit * self.blocks_per_unit
        VERIFY_HEADER.pack_into(buf, 0, VERIFY_MAGIC, lba, self.seed, gen, 0, 0)
        view = memoryview(buf)
        crc = crc32c(view[_CRC_OFFSET + 4 :], crc32c(view[:_CRC_OFFSET]))
        struct.pack_into("<I", buf, _CRC_OFFSET, crc)

    def check(self, buf: bytearray, unit: int, gen: int | None) -> None:
        """Count a verify check of ``unit`` read into ``buf``; ``gen`` is what must be there."""
        verify = self.verify
        assert verify is not None
        verify.checked += 1
        magic, lba, seed, got_gen, crc, _ = VERIFY_HEADER.unpack_from(buf)
        view = memoryview(buf)
        want_lba = unit * self.blocks_per_unit
        problem = None
        if magic != VERIFY_MAGIC:
            problem = f"no verify header (magic {magic!r})"
        elif lba != want_lba:
            problem = f"header says LBA {lba}"
        elif seed != self.seed:
            problem = f"seed {seed:#x}, this run's is {self.seed:#x}"
        elif crc != crc32c(view[_CRC_OFFSET + 4 :], crc32c(view[:_CRC_OFFSET])):
            problem = "CRC32C mismatch"
        elif gen is not None and got_gen != gen:
            problem = f"generation {got_gen}, the last completed write was {gen}"
        if problem is not None:
            verify.mismatches += 1
            if len(verify.examples) < MAX_REPORTED_MISMATCHES:
                verify.examples.append(f"LBA {want_lba}: {problem}")

    # -- phases ---------------------------------------------------------------------------------
    async def prefill(self) -> None:
        """Write every unit of every job (generation 0) so reads have something to verify."""
        sem = asyncio.Semaphore(self.spec.iodepth * self.spec.numjobs)
        bs = self.spec.bs

        async def one(job: _Job, unit: int) -> None:
            async with sem:
                if self.stop:  # interrupted: the timed phase will not run either
                    return
                buf = bytearray(bs)
                self.fill(buf, job.first_unit + unit, 0)
                await self.ctrl.write(
                    self.spec.nsid,
                    (job.first_unit + unit) * self.blocks_per_unit,
                    self.blocks_per_unit,
                    buf,
                    queue=job.queue,
                )
                job.expected[unit] = 0

        await asyncio.gather(*(one(job, u) for job in self.jobs for u in range(job.units)))

    async def readback(self) -> None:
        """Read every unit whose last write is known and check it."""
        sem = asyncio.Semaphore(self.spec.iodepth * self.spec.numjobs)

        async def one(job: _Job, unit: int, gen: int) -> None:
            async with sem:
                buf = bytearray(self.spec.bs)
                await self.ctrl.read(
                    self.spec.nsid,
                    (job.first_unit + unit) * self.blocks_per_unit,
                    self.blocks_per_unit,
                    buf,
                    queue=job.queue,
                )
                self.check(buf, job.first_unit + unit, gen)

        await asyncio.gather(
            *(one(job, u, g) for job in self.jobs for u, g in sorted(job.expected.items()))
        )

    async def worker(self, job: _Job, deadline: float) -> None:
        spec = self.spec
        ctrl = self.ctrl
        nsid = spec.nsid
        bpu = self.blocks_per_unit
        buf = bytearray(spec.bs)
        if not spec.verify:
            buf[:] = self.pool[: spec.bs]
        verify = spec.verify
        mixed = spec.rw == "randrw"
        always_read = spec.rw in ("read", "randread")
        mix = spec.rwmixread / 100
        rng = job.rng.random
        rstats, wstats = self.read_stats, self.write_stats
        read, write = ctrl.read, ctrl.write
        clock = time.perf_counter_ns
        monotonic = time.monotonic
        busy = job.busy
        bs = spec.bs
        q = job.queue
        first = job.first_unit
        while not self.stop and monotonic() < deadline:
            unit = job.pick()
            is_read = rng() < mix if mixed else always_read
            if verify:
                busy.add(unit)
            slba = (first + unit) * bpu
            try:
                if is_read:
                    t0 = clock()
                    await read(nsid, slba, bpu, buf, queue=q)
                    rstats.lat.append(clock() - t0)
                    rstats.ios += 1
                    rstats.bytes += bs
                    if verify:
                        self.check(buf, first + unit, job.expected.get(unit))
                else:
                    gen = 0
                    if verify:
                        job.gen += 1
                        gen = job.gen
                        self.fill(buf, first + unit, gen)
                    t0 = clock()
                    await write(nsid, slba, bpu, buf, queue=q)
                    wstats.lat.append(clock() - t0)
                    wstats.ios += 1
                    wstats.bytes += bs
                    if verify:
                        job.expected[unit] = gen
            except Exception as exc:
                if self.error is None:
                    self.error = exc
                self.stop = True
                return
            finally:
                if verify:
                    busy.discard(unit)

    async def progress_loop(
        self, start: float, report: Callable[[Progress], None] | None, interval: float = 1.0
    ) -> None:
        """Every ``interval`` seconds: a :class:`Progress` sample, kept and reported."""
        last = (start, 0, 0, 0, 0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            r, w = self.read_stats, self.write_stats
            t0, rio, rb, wio, wb = last
            dt = max(now - t0, 1e-9)
            sample = Progress(
                elapsed=now - start,
                read_iops=(r.ios - rio) / dt,
                read_mb_s=(r.bytes - rb) / dt / 1e6,
                write_iops=(w.ios - wio) / dt,
                write_mb_s=(w.bytes - wb) / dt / 1e6,
                runtime=self.spec.runtime,
            )
            self.samples.append(sample)
            if report is not None:
                report(sample)
            last = (now, r.ios, r.bytes, w.ios, w.bytes)


def queue_warnings(spec: BenchSpec, queues: int, depth: int) -> list[str]:
    """What a run on ``queues`` I/O queues of ``depth`` commands each cannot do as ``spec`` asks:
    more commands per job than a queue holds (the rest wait in the host, and the latency
    measured includes that wait), or fewer queues than jobs (jobs share a queue)."""
    notes = []
    if queues < spec.numjobs:
        notes.append(
            f"{spec.numjobs} jobs on {queues} I/O queue{'s' if queues != 1 else ''} (the "
            f"controller granted {queues}): jobs share queues, ask for more with -i"
        )
    per_queue = spec.iodepth * -(-spec.numjobs // max(1, queues))
    if per_queue > depth:
        notes.append(
            f"--iodepth {spec.iodepth} puts {per_queue} commands on an I/O queue that holds "
            f"{depth} (queue size granted {depth + 1}): the rest wait in the host"
        )
    return notes


async def run_bench(
    ctrl: Controller,
    spec: BenchSpec,
    *,
    progress: Callable[[Progress], None] | None = None,
    note: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> BenchResult:
    """Run ``spec`` on ``ctrl``'s I/O queues; ``progress`` gets a sample every second.

    Job ``j`` uses I/O queue ``j`` modulo the queue count.  :class:`ValueError` for a spec that
    does not fit the namespace (naming the option); an I/O error ends the run early and is
    reported in :attr:`BenchResult.error`.  ``note`` gets what the user should know (prefill,
    read-back, each of :func:`queue_warnings`); setting ``stop`` ends the timed phase early.
    """
    spec.validate()
    geo = await ctrl.namespace(spec.nsid)
    if spec.bs % geo.block_size:
        raise ValueError(f"--bs: {spec.bs} is not a multiple of the LBA size {geo.block_size}")
    if spec.verify and spec.bs < VERIFY_HEADER.size:
        raise ValueError(f"--bs: {spec.bs} is too small for --verify")
    if spec.bs > ctrl.max_transfer:
        raise ValueError(f"--bs: {spec.bs} exceeds the controller's MDTS ({ctrl.max_transfer})")
    if not ctrl.io_queues:
        raise HostError("the controller has no I/O queues")
    bench = _Bench(ctrl, spec, geo)
    depth = min(q.depth for q in ctrl.io_queues)
    warnings = queue_warnings(spec, len(ctrl.io_queues), depth)
    if note is not None:
        for text in warnings:
            note(f"warning: {text}")
    loop = asyncio.get_running_loop()
    watcher = None
    if stop is not None:

        async def watch() -> None:
            await stop.wait()
            bench.stop = True
            bench.interrupted = True

        watcher = loop.create_task(watch())
    try:
        if spec.verify and spec.reads:
            if note is not None:
                units = sum(j.units for j in bench.jobs)
                note(f"prefilling {units * spec.bs / (1 << 20):.1f} MiB for --verify")
            await bench.prefill()
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        keep_alives = ctrl.keep_alives_sent
        start = time.monotonic()
        deadline = start + spec.runtime
        ticker = loop.create_task(bench.progress_loop(start, progress))
        try:
            await asyncio.gather(
                *(bench.worker(job, deadline) for job in bench.jobs for _ in range(spec.iodepth))
            )
        finally:
            ticker.cancel()
    finally:
        if watcher is not None:
            watcher.cancel()
    elapsed = time.monotonic() - start
    keep_alives = ctrl.keep_alives_sent - keep_alives
    cpu = CpuUsage.between(usage_before, resource.getrusage(resource.RUSAGE_SELF), elapsed)
    if spec.verify and spec.writes and bench.error is None and not bench.interrupted:
        if note is not None:
            note("reading back what was written for --verify")
        try:
            await bench.readback()
        except Exception as exc:
            bench.error = exc
    everything = array.array("q", bench.read_stats.lat)
    everything.extend(bench.write_stats.lat)
    lat_ns = {}
    if spec.reads:
        lat_ns["read"] = bench.read_stats.lat
    if spec.writes:
        lat_ns["write"] = bench.write_stats.lat
    return BenchResult(
        spec=spec,
        elapsed=elapsed,
        block_size=geo.block_size,
        read=bench.read_stats.result(elapsed) if spec.reads else None,
        write=bench.write_stats.result(elapsed) if spec.writes else None,
        verify=bench.verify,
        error=None if bench.error is None else f"{type(bench.error).__name__}: {bench.error}",
        interrupted=bench.interrupted,
        cpu=cpu,
        latency=latency_distribution(everything),
        samples=bench.samples,
        warnings=warnings,
        io_queues=len(ctrl.io_queues),
        queue_depth=depth,
        keep_alives=keep_alives,
        lat_ns=lat_ns,
    )
