"""The benchmark client as a process of its own, so its CPU is never counted as the target's.

    python bench/client.py PORT NQN QUEUES

connects this project's host (:func:`nvmf.host.connect`, ``QUEUES`` I/O queues) to
``127.0.0.1:PORT``, prints ``ready N`` (N: the I/O queues it got), then serves one request per
stdin line: a JSON :class:`~nvmf.host.bench.BenchSpec` (as a dict) in, one JSON line out with the
run's I/Os, elapsed seconds, IOPS, MB/s, p50/p99 latency (µs) and error (``null`` when none).
End of input disconnects and exits.  The driver (``run.py``) reads the target's CPU time just
before it sends a spec and just after the answer: the window holds the I/O phase only, not the
client's start-up nor the connect sequence.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from nvmf.host import connect
from nvmf.host.bench import BenchSpec, run_bench
from nvmf.host.runtime import run as run_async


async def _serve(port: int, nqn: str, queues: int) -> None:
    loop = asyncio.get_running_loop()
    async with await connect("127.0.0.1", nqn, trsvcid=port, nr_io_queues=queues) as ctrl:
        print(f"ready {len(ctrl.io_queues)}", flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return
            spec = BenchSpec(**json.loads(line))
            out: dict[str, Any]
            try:
                result = await run_bench(ctrl, spec)
            except (ValueError, OSError) as exc:
                out = {"ios": 0, "elapsed": 0.0, "error": f"{type(exc).__name__}: {exc}"}
            else:
                d = result.write if spec.rw in ("write", "randwrite") else result.read
                assert d is not None
                out = {
                    "ios": d.ios,
                    "elapsed": result.elapsed,
                    "iops": d.iops,
                    "mb_s": d.mb_s,
                    "p50_us": d.lat_us.p50,
                    "p99_us": d.lat_us.p99,
                    "error": result.error,
                }
            print(json.dumps(out), flush=True)


def main() -> None:
    port, nqn, queues = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    run_async(_serve(port, nqn, queues))


if __name__ == "__main__":
    main()
