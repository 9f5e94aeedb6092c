"""Python function calls per I/O on the target's data path (issue 7 asks for at most 60 per
4 KiB read).

    .venv/bin/python bench/calls.py [--rw randread] [--bs 4096] [--ios 20000] [--iodepth 32]

Runs the target in this process (one data-plane process: ``--workers 0``, so the data path is
the same code a worker runs, in the thread this tool can watch), drives it from a client
process (``bench/client.py``), and counts, with ``sys.setprofile`` on the target's thread, every
Python-level call and every call of a C function during the I/O phase only.  Prints the calls
per I/O, and the functions that make up most of them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from local import SUBNQN, target_config  # noqa: E402

from nvmf.config.load import parse_config  # noqa: E402
from nvmf.control.service import TargetService  # noqa: E402


class Counter:
    """A ``sys.setprofile`` hook counting calls by function, switched on and off from outside."""

    def __init__(self) -> None:
        self.on = False
        self.calls: collections.Counter[str] = collections.Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on:
            return
        if event == "call":
            code = frame.f_code
            self.calls[f"{Path(code.co_filename).name}:{code.co_firstlineno} {code.co_name}"] += 1
        elif event == "c_call":
            self.calls[f"<c> {getattr(arg, '__qualname__', repr(arg))}"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rw", default="randread")
    parser.add_argument("--bs", type=int, default=4096)
    parser.add_argument("--iodepth", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    cfg = parse_config(target_config(4420, "ram", 256 << 20))
    cfg.ports[0].trsvcid = "0"
    cfg.nvmf.offload_workers = 0
    counter = Counter()
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    service = TargetService(cfg)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(service.start())
        sys.setprofile(counter)
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    port = service.transports["tcp"].bound_address(service.ports[0])[1]
    client = subprocess.Popen(
        [sys.executable, str(HERE / "client.py"), str(port), SUBNQN, "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    assert client.stdout.readline().startswith("ready")
    spec = {"rw": args.rw, "bs": args.bs, "iodepth": args.iodepth, "runtime": args.seconds}
    counter.on = True
    client.stdin.write(json.dumps(spec) + "\n")
    client.stdin.flush()
    result = json.loads(client.stdout.readline())
    counter.on = False
    client.stdin.close()
    client.wait(30)
    asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)

    ios = result["ios"]
    total = sum(counter.calls.values())
    python = sum(n for name, n in counter.calls.items() if not name.startswith("<c>"))
    print(f"{args.rw} bs={args.bs} QD{args.iodepth}: {ios} I/Os")
    print(f"calls per I/O: {total / ios:.1f} ({python / ios:.1f} Python functions, "
          f"{(total - python) / ios:.1f} C functions)")  # fmt: skip
    for name, n in counter.calls.most_common(args.top):
        print(f"  {n / ios:6.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
