"""The decision half of a door: the offline policy core (`policy`, no I/O), the in-memory
whitelist view, the frame-to-decision loop and its helpers (confirmation episodes, credential
throttle, card reader, worker threads, statistics)."""
