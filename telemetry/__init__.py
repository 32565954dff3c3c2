"""What every process reports about itself: Prometheus metrics (`metrics`), OpenTelemetry traces (`tracing`) and
structured logs (`logs`). Imports only `contracts`; `bus` and everything above it report through here.
"""
