"""From accepted notification to sink: the outbox, per-receiver dispatch, still-firing state."""
