"""Prometheus metrics from the journal: a worker's live sink and ``tether metrics`` (a real
subprocess serving from the store), each scraped over HTTP by a real client and parsed
with prometheus_client's own text parser."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.test_telemetry_otel import AGENTS, WRITER
from tether import Worker, start_run
from tether.ops import Tether
from tether.store.sqlite import SQLiteStore
from tether.system_clock import SYSTEM_CLOCK
from tether.telemetry.metrics import CommitMetrics, EventMetrics, StoreGauges, serve
from tether.telemetry.sink import TelemetrySink

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (a loopback URL)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, x) in ls for k, x in labels.items()))


def test_worker_metrics_and_tether_metrics_from_the_store_agree(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    w = start_run(store, WRITER, agent_ref="writer", goal="warn", name="writer")
    m = EventMetrics(lookup=store.event)
    m.registry.register(StoreGauges(store, SYSTEM_CLOCK.now))
    sink = TelemetrySink(store, metrics=m, commits=CommitMetrics(m.registry))
    server = serve(m.registry, 0, before=sink.flush)  # as tether worker --metrics-port
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        asyncio.run(Worker(store, agents=AGENTS, on_commit=sink, only={w}).run(until_idle=True))
        waiting = scrape(url)  # the irreversible notify waits for a person
        assert _sum(waiting, "tether_approvals_pending") == 1
        assert _sum(waiting, "tether_approval_oldest_age_seconds") >= 0
        assert _sum(waiting, "tether_runs", status="awaiting_approval") == 1
        assert _sum(waiting, "tether_effects_total") == 0
        assert _sum(waiting, "tether_policy_decisions_total", verdict="approve") == 1
        (pending,) = Tether(store).approvals()
        Tether(store, agents=AGENTS, who="human:ops").approve(pending.id)
        asyncio.run(Worker(store, agents=AGENTS, on_commit=sink, only={w}).run(until_idle=True))
        live = scrape(url)
    finally:
        server.shutdown()
        server.server_close()
        sink.close()
    row = store.get_run(w)
    assert row is not None and row.status == "done"
    assert _sum(live, "tether_approvals_pending") == 0
    assert _sum(live, "tether_runs", status="done") == 1
    assert _sum(live, "tether_steps_total", agent="writer") == row.step == 3
    assert _sum(live, "tether_step_duration_seconds_count", agent="writer") == 3
    assert _sum(live, "tether_model_calls_total", agent="writer", model="gpt-test") == 3
    for kind, key in (("input", "input_tokens"), ("output", "output_tokens")):
        assert _sum(live, "tether_tokens_total", model="gpt-test", type=kind) == row.usage[key]
    assert _sum(live, "tether_tool_calls_total", tool="lookup") == 1
    assert _sum(live, "tether_effects_total", **{"class": "irreversible", "outcome": "intent"}) == 1
    assert _sum(live, "tether_effects_total", **{"class": "irreversible", "outcome": "done"}) == 1
    assert _sum(live, "tether_journal_commit_seconds_count") >= 2
    assert _sum(live, "tether_journal_commit_writes_total") >= 2

    # `tether metrics`: another process, the same counters folded from the store.
    exe = Path(sys.executable).with_name("tether")
    proc = subprocess.Popen([str(exe), "--store", str(db), "metrics", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert found, line
        served = scrape(found.group(0))
        again = scrape(found.group(0))  # a second scrape counts nothing twice
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes its pipe
    for name in ("tether_steps_total", "tether_model_calls_total", "tether_tokens_total",
                 "tether_cost_usd_total", "tether_tool_calls_total", "tether_effects_total",
                 "tether_policy_decisions_total", "tether_step_duration_seconds_count",
                 "tether_runs", "tether_approvals_pending"):
        assert _sum(served, name) == _sum(live, name) == _sum(again, name), name
    assert _sum(served, "tether_journal_commit_seconds_count") == 0  # a worker's own
    store.close()


def test_a_port_that_cannot_be_served_is_one_error_line(tmp_path: Path) -> None:
    import socket

    from typer.testing import CliRunner

    from tether.cli.app import app
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for port, why in ((99999, "must be 0-65535"),
                          (taken.getsockname()[1], "Address already in use")):
            res = CliRunner().invoke(app, ["--store", str(db), "metrics", "--port", str(port)])
            assert res.exit_code == 2 and why in res.output, res.output
            assert "Traceback" not in res.output


def test_a_folded_histogram_shows_what_prometheus_clients_own_would() -> None:
    import prometheus_client as pc

    from tether.telemetry.metrics import STEP_BUCKETS, FoldedHistogram
    values = [0.0, 0.001, 0.0011, 0.7, 2.5, 99.0, 5000.0]  # on, between and past the bounds
    ours, theirs = pc.CollectorRegistry(), pc.CollectorRegistry()
    folded = FoldedHistogram("t_seconds", "doc", ("agent",), STEP_BUCKETS)
    ours.register(folded)
    folded.observe(("a",), values[:3])
    folded.observe(("a",), values[3:])  # two rounds add up
    plain = pc.Histogram("t_seconds", "doc", ["agent"], buckets=STEP_BUCKETS, registry=theirs)
    for v in values:
        plain.labels("a").observe(v)

    def samples(reg: pc.CollectorRegistry) -> Samples:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in reg.collect() for s in fam.samples if not s.name.endswith("_created")}

    assert samples(ours) == samples(theirs)
    assert samples(ours)[("t_seconds_bucket", (("agent", "a"), ("le", "0.001")))] == 2
    created = [s for fam in ours.collect() for s in fam.samples if s.name == "t_seconds_created"]
    assert len(created) == 1 and created[0].labels == {"agent": "a"}
