"""What the attempts left behind: the state directory, the store of attempt records (typed in
core/attempt_record.py), the crash-loop guard, goodput, the report and the timeline."""
