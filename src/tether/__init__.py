"""tether: the operations layer for always-on AI agent loops."""
