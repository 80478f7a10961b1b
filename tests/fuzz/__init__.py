"""Property-based fuzzing of every input decoder: no crash, no hang, rejections with a reason."""
