"""What redacting a message costs ``ctx.send`` (or a blackboard write): the journal-side
work per call, before and after redaction, on the same bodies.

``base`` is what a send did before (JSON form, a plain SHA-256 fingerprint);
``redact`` is what it does now (the same, plus the policy's patterns over topic and
body; a keyed HMAC instead when they held a secret). Bodies:

* ``plain``: a 1.1 KB support reply (prose, ids, a URL), no secret: the common case;
* ``secret``: the same with an OpenAI key and a bearer token in it.

Load-independent figures come from callgrind::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.redact_cost MODE BODY N

and the difference of two runs' instruction counts divided by N. Without valgrind,
``python -m bench.redact_cost`` prints timeit medians (µs per call).
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from typing import Any

from tether.core.canonical import digest, json_safe
from tether.core.fingerprint import fingerprint
from tether.core.redaction import DEFAULT, keyed_digest

KEY = bytes(range(32))
TEXT = ("Hi Dana, thanks for the details on order 4471-A. I checked the shipment: it left "
        "the Rotterdam hub on Tuesday and the carrier's tracking at https://track.example."
        "com/p/77812 shows it in customs. Customs holds take two to five working days; I "
        "opened case 88213 so we hear the moment it clears. If you need the parts sooner, "
        "I can send the two pumps from stock in Lyon overnight at no cost, and we cancel "
        "the held ones when they arrive. Let me know which you prefer. ") * 2
BODIES: dict[str, Any] = {
    "plain": {"text": TEXT, "order": "4471-A", "priority": 2},
    "secret": {"text": TEXT + " key sk-proj-Zq7Tg2mW9xLr4VbN8cK1pQ3sY6dF0hJ5aE2uI7oR, "
               "Authorization: Bearer 8f2KqZ7tW1mXr9VbN3cLp5sY0dG4hJ6aE",
               "order": "4471-A", "priority": 2},
}


def base(body: Any) -> tuple[str, Any]:
    """A send's journal-side work before redaction."""
    body_json = json_safe(body)
    return fingerprint("send", "billing", digest(["refund", body_json])), body_json


def redact(body: Any) -> tuple[str, Any]:
    """The same with redaction (``StepServices.args_fingerprint``'s steps)."""
    value = ["refund", json_safe(body)]
    shown = DEFAULT.redact(value)
    if shown is value:
        return fingerprint("send", "billing", digest(value)), value
    return fingerprint("send", "billing", keyed_digest(KEY, value)), shown


MODES: dict[str, Callable[[Any], tuple[str, Any]]] = {"base": base, "redact": redact}


def main(argv: list[str]) -> int:
    if argv:
        mode, body, n = argv[0], argv[1], int(argv[2])
        fn, b = MODES[mode], BODIES[body]
        for _ in range(n):
            fn(b)
        return 0
    for body in BODIES:
        for mode, fn in MODES.items():
            t = timeit.repeat(lambda fn=fn, b=BODIES[body]: fn(b), number=2000, repeat=7)
            print(f"{body:6} {mode:6} {sorted(t)[3] / 2000 * 1e6:7.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
