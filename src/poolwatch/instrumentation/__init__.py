"""In-process instrumentation: pool hooks -> pool state -> Prometheus / OpenTelemetry."""
