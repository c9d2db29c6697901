"""Experiments built on the simulator: policy comparisons, the demo, studies and sweeps."""
