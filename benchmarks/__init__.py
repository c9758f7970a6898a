"""semroute benchmark harness: ``python -m benchmarks [--quick|--full] [--suites a,b] [--out DIR]``."""
