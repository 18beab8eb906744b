"""The runtime: workers, the step executor, replay, leases and group commit."""
