"""Reports for operators: what happened in a time window (the night), and queries over it."""
