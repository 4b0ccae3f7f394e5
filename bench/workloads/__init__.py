"""The workloads, one module each; bench.run measures them in its order beside their baselines."""
