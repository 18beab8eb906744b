"""schemathesis fuzzes the whole JSON API from its own schema (``/api/openapi.json``),
in process (ASGI), authenticated with an admin token, over a small real store with runs,
an approval waiting, an in-doubt-free effect and an alert: no request may get a server
error, and every 4xx has the error body ``{"error": {"status", "kind", "message"}}``.

Generated path parameters are random strings half the time and the store's real ids the
other half, so both the "no such run" paths and the real operations are reached.
Bounded (a few examples per operation, derandomized) so it runs in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from tests.ui_agents import payer, writer  # noqa: E402
from tests.uikit import alerting_world  # noqa: E402
from tether.identity import create_token  # noqa: E402
from tether.store.sqlite import SQLiteStore  # noqa: E402
from tether.ui.app import create_app  # noqa: E402

AGENTS = {"tests.ui_agents:payer": payer, "tests.ui_agents:writer": writer}
BASE = "http://127.0.0.1:8765"
EXAMPLES = 12
"""Examples per operation: enough to reach each refusal path, small enough for seconds."""
SKIP = {"GET /api/live"}  # a stream that never ends by design (test_ui_signin follows it)


def _real(name: str, ids: dict[str, str]) -> list[str]:
    return {"run": [ids["pay"], ids["wr"], ids["loop"]], "approval": [ids["approval"]],
            "effect": [ids["effect"]], "alert": [ids["alert"]]}.get(name, [])


def _fuzz(op: Any, client: TestClient, ids: dict[str, str], auth: dict[str, str]) -> None:
    """Fuzz one operation; AssertionError on the first bad answer (after shrinking)."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(), data=st.data())
    def check(case: Any, data: st.DataObject) -> None:
        for name in list(case.path_parameters or {}):
            real = _real(name, ids)
            if real and data.draw(st.booleans()):
                case.path_parameters[name] = data.draw(st.sampled_from(real))
        kw = case.as_transport_kwargs(base_url=BASE, headers=auth)
        kw.pop("cookies", None)
        resp = client.request(**kw)
        where = f"{op.label}: {kw['method']} {kw['url']} {kw.get('json')!r}"
        assert resp.status_code < 500, f"{where} -> {resp.status_code} {resp.text}"
        if resp.status_code >= 400:
            body = resp.json()
            err = body.get("error") if isinstance(body, dict) else None
            assert isinstance(err, dict) and set(err) == {"status", "kind", "message"} and \
                err["status"] == resp.status_code and err["kind"] and err["message"], \
                f"{where} -> {resp.status_code} {resp.text}"
    check()


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_the_api_fuzzed_from_its_schema_has_no_server_error_and_well_formed_4xx(
        tmp_path: Path, role: str) -> None:
    """As an admin every operation runs; as a viewer every change is a well-formed 403."""
    s = SQLiteStore(tmp_path / "t.db")
    ids = alerting_world(s, tmp_path)
    _, secret = create_token(s, "fuzz", role, who="human:root")
    auth = {"Authorization": f"Bearer {secret}"}
    app = create_app(s, port=8765, agents=AGENTS)
    problems: list[str] = []
    with TestClient(app, base_url=BASE) as client:
        schema = schemathesis.openapi.from_dict(client.get("/api/openapi.json").json())
        ops = [r.ok() for r in schema.get_all_operations()]
        assert len(ops) >= 30
        for op in ops:
            if op.label in SKIP:
                continue
            try:
                _fuzz(op, client, ids, auth)
            except AssertionError as exc:
                problems.append(str(exc).splitlines()[0][:800])
    s.close()
    assert not problems, "\n".join(problems)
