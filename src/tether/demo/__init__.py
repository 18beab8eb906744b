"""``tether demo``: a small team of agents works through a simulated night."""
