"""What the supervisor and the training library both import: standard library only."""
