"""Runner-side pieces: hooks, optimizer constructors, wrappers for CPU training."""
