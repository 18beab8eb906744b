"""The process ``tether audit verify`` starts to walk half of a large store's chains.

See :mod:`tether.audit.share`. It opens the store by URL read-only, answers one
request from stdin on stdout (pickled: it is our own parent's pipe), and exits.
"""

from __future__ import annotations

import gc
import pickle
import sys

BOOT = ("import importlib.util as u, sys, types\n"
        "p = types.ModuleType('tether')\n"
        "p.__path__ = list(u.find_spec('tether').submodule_search_locations)\n"
        "sys.modules['tether'] = p\n"
        "from tether.cli.verify_helper import main\n"
        "main()\n")
"""Python that runs :func:`main` without ``tether/__init__``: that imports the whole
runtime (a model client among it), about 1 s of a start that otherwise takes 0.2 s."""

COMMAND = (sys.executable, "-c", BOOT)
"""The command that starts the helper (``verify_store(helper=...)``)."""


def main() -> None:
    """Answer one request: ``(url, mark, part)`` in, the helper's messages out (see
    :func:`tether.audit.share.answer`; None when the store cannot be opened)."""
    from tether.audit.share import answer
    from tether.errors import TetherError
    from tether.store import open_store

    url, mark, part = pickle.load(sys.stdin.buffer)  # noqa: S301 (from our own parent)
    gc.disable()  # as verify_store: nothing it keeps is in a cycle
    out = sys.stdout.buffer

    def send(message: object) -> None:
        out.write(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        out.flush()  # now: the parent waits for each message in turn

    try:
        store = open_store(url, create=False, readonly=True)
        try:
            answer(store, mark, part, send)
        finally:
            store.close()
    except TetherError:
        send(None)
