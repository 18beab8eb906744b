"""The monitors' evaluation (issue 10, docs/monitors.md "Evaluation").

* :mod:`.scenarios`: a seeded generator of labelled scenarios (loops, ping-pong, no
  progress, cost spikes, drift, invariant breaks and negative controls). Each is a
  plan for one or two scripted runs; ``labels.json`` (committed) names, per run, the
  monitor that should fire (or none) and the 0-based step where the problem starts.
* :mod:`.drive`: plays the plans as real tether runs (StepAgent, a scripted model,
  real tools, a temp SQLite store, a Worker), so the events are what the runtime writes.
* :mod:`.score`: feeds each run's events to every registered monitor through
  :class:`~tether.core.monitors.watch.Watch` (observe, and propose before each call),
  and scores them against the labels.
* :mod:`.taubench`: the tau-bench airline transcripts (read from ../shared/data, never
  copied here) converted to events and scored against their reward.

``python -m bench.eval`` (``make eval``) runs it all and rewrites the tables in
docs/monitors.md; ``python -m bench.eval labels`` writes ``labels.json`` again.
"""
