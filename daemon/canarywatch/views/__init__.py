"""Read models fed by transitions: the live view, canary-state metrics, decision trails."""
