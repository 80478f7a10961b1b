"""The daemon's HTTP listener: /metrics and health, the control API, the live API."""
