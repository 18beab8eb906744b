"""Telemetry as a sink of the journal: OpenTelemetry spans and Prometheus metrics.

Nothing here is called from the code that runs agents. The worker hands every
write its commits made durable to a :class:`~tether.telemetry.sink.TelemetrySink`
(:data:`tether.runtime.committer.OnCommit`); ``tether export-otel`` and ``tether
metrics`` read the same events back from the store. The OpenTelemetry SDK and
``prometheus-client`` are optional extras (``tether[otel]``, ``tether[metrics]``),
imported only when asked for. See docs/telemetry.md.
"""
