"""What the attempts left behind: the record, the state directory it lives in, the store, the
crash-loop guard, goodput, the report and the timeline."""
