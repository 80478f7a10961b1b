"""canarywatch's public data formats: the JSON output shape and the recording format."""
