"""Prometheus metrics of a gateway process."""

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("cohort_gateway_connections", "Open participant WebSockets")
FRAMES = Counter("cohort_gateway_frames_total", "Update frames queued to participants")
COMMANDS = Counter("cohort_gateway_commands_total", "Commands written to partition streams")
RESYNCS = Counter("cohort_gateway_resyncs_total", "Full-state resyncs sent")
BAD_INPUT = Counter("cohort_gateway_bad_input_total", "Rejected client frames", ["code"])
READ_PAUSES = Counter("cohort_gateway_read_pauses_total",
                      "Times a channel stopped reading its client until its answers were written")
THROTTLED = Counter("cohort_gateway_throttled_total",
                    "Messages a channel read late because its client sent past its rate")
