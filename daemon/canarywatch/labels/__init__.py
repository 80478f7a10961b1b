"""Alertmanager's label syntax: matchers, RE2 regular expressions, time intervals, durations."""
