"""Pure core: ids, canonical encoding, events and chains, checkpoints, budgets.

Nothing here does I/O; the store and the runtime execute what the core decides.
"""
