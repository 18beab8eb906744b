"""Sizes and repeat counts of a full run and of a ``--quick`` smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    """What to run. Sizes follow the issue; ``quick`` shrinks them for a smoke run."""

    quick: bool
    sizes: tuple[int, ...]
    """Steps of the growing-conversation loop (N)."""
    repeats: int
    """Repeats of each tether timing and of the SQLite baseline."""
    lg_repeats: int
    """Repeats of each LangGraph timing (the slow side, up to ~2 GB per run)."""
    invoke_sizes: tuple[int, ...]
    """N for the LangGraph variant that calls ``invoke`` once per step (3 checkpoints a step)."""
    read_repeats: int
    """Loads and listings timed per repeat at the largest N."""
    concurrent_runs: int
    concurrent_steps: int
    swarm_runs: int
    swarm_steps: int
    swarm_repeats: int
    model_delay: float
    """Seconds the in-process model awaits per call."""
    policy_batches: int
    """Timed batches of 100 ``Policy.decide`` calls per case."""
    stop_runs: int
    """Active runs in the worker subprocess while runs are stopped."""
    stop_sample: int
    """Runs stopped one at a time, and as many again in a burst, per repeat."""
    stop_repeats: int
    """Fresh worker subprocesses (each with ``stop_runs`` runs) the stop samples are pooled from."""
    target_n: int = 1000
    """N at which per-step overhead is compared."""
    rollback_steps: int = 1000
    """Steps (one file effect each) of the run rolled back to step 0."""
    rollback_repeats: int = 5
    """Fresh runs built and rolled back (~3 s each at 1,000 steps)."""
    impact_work_steps: int = 91
    """Work steps per run of the 100-run impact swarm (91: just over 100,000 events, ~30 s)."""
    impact_repeats: int = 9
    """Timed ``impact`` calls per origin on the built swarm."""
    audit_repeats: int = 5
    seal_events: int = 1_000_000
    """Events of the store a seal of 10,000 new ones is timed on (incremental, from scratch)."""
    query_events: int = 1_000_000
    telemetry_rounds: int = 5
    """Timed verifies and seals of the audit benchmark's swarm (built like impact's)."""

    ui_runs: int = 1000
    """Runs in the store whose dashboard overview is rendered."""
    ui_pairs: int = 5
    """Pairs of worker runs (no page open, 100 open) for the pages' cost to a worker."""
    ui_steps: int = 2500
    """Steps of each of the 4 runs the worker steps while the pages follow them."""

    pg_n: int = 1000
    """Steps of the loop timed on SQLite and on PostgreSQL (and of the bare-commit floor)."""
    pg_repeats: int = 5
    """Repeats of the PostgreSQL section's loop (each system on each backend in turn)."""
    pg_runs: int = 100
    """Runs the throughput benchmark's worker processes share."""
    pg_steps: int = 100
    """Steps of each of those runs."""
    pg_workers: tuple[int, ...] = (1, 2, 4)
    """Worker processes sharing the runs."""
    pg_rounds: int = 3
    """Rounds of the throughput benchmark (every worker count on both backends per round)."""

    int_turns: int = 50
    """Turns of the tool-calling agent each framework runs alone and under tether."""
    int_repeats: int = 5
    """Rounds of the integrations benchmark (every framework and mode once per round)."""

    def steps_text(self) -> str:
        """How the swarm benchmark's ideal is defined, for the report."""
        return (f"{self.swarm_runs} runs × {self.swarm_steps} steps, each step one call to an "
                f"in-process model that awaits {self.model_delay:g} s; ideal = "
                f"{self.swarm_runs / self.model_delay:,.0f} steps/s, i.e. the whole run in "
                f"{self.swarm_steps * self.model_delay:g} s.")


FULL = Config(quick=False, sizes=(200, 1000, 3000), repeats=5, lg_repeats=3,
              invoke_sizes=(200, 1000), read_repeats=20, concurrent_runs=100,
              concurrent_steps=200, swarm_runs=1000, swarm_steps=5, swarm_repeats=3,
              model_delay=1.0, policy_batches=2000, stop_runs=1000, stop_sample=100, stop_repeats=2)

QUICK = Config(quick=True, sizes=(100, 300), repeats=2, lg_repeats=2, invoke_sizes=(100,),
               read_repeats=5, concurrent_runs=20, concurrent_steps=50, swarm_runs=200,
               swarm_steps=2, swarm_repeats=2, model_delay=1.0, policy_batches=300, stop_runs=200,
               stop_sample=20, stop_repeats=1, target_n=300,
               rollback_steps=200, rollback_repeats=2, impact_work_steps=16, impact_repeats=5,
               audit_repeats=2, seal_events=30_000, query_events=20_000, telemetry_rounds=1,
               ui_runs=200, ui_pairs=1, ui_steps=500,
               pg_n=100, pg_repeats=2, pg_runs=8, pg_steps=20, pg_rounds=1,
               int_turns=12, int_repeats=2)
