"""What the attempts left behind: the record, the store, the crash-loop guard, goodput, the report,
the timeline, --inspect, metrics."""
