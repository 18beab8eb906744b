"""``tether demo`` with kill points in its set-up, for the demo's crash tests.

    python -m tests.demo_kill POINT -- DEMO-ARGS...

POINT ``tx:K`` SIGKILLs the process right after its K-th committed store
transaction (K from 1); ``worker`` SIGKILLs it as the first worker pass starts,
once set-up is over. If set-up ends before transaction K, the process exits
with :data:`SETUP_DONE` instead, so a test can walk K = 1, 2, ... over every
point of the set-up, whatever it is made of.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

SETUP_DONE = 3


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    from tether.cli.app import main as tether_main
    from tether.runtime.worker import Worker
    from tether.store.sqlite_base import SQLiteBase

    point, demo_args = argv[0], argv[argv.index("--") + 1:]
    kill_at = int(point.partition(":")[2]) if point.startswith("tx:") else None
    committed = 0
    plain_tx = SQLiteBase._tx

    @contextlib.contextmanager
    def counted_tx(self: SQLiteBase) -> Iterator[Any]:
        nonlocal committed
        with plain_tx(self) as c:
            yield c
        committed += 1
        if committed == kill_at:
            _die()

    plain_run = Worker.run

    async def first_pass(self: Worker, **kw: Any) -> Any:
        if point == "worker":
            _die()
        if kill_at is not None:
            print(f"set-up done after {committed} transactions", flush=True)
            os._exit(SETUP_DONE)
        return await plain_run(self, **kw)

    SQLiteBase._tx = counted_tx  # type: ignore[method-assign]
    Worker.run = first_pass  # type: ignore[method-assign]
    sys.argv = ["tether", "demo", *demo_args]
    tether_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
