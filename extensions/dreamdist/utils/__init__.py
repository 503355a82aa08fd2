"""Small shared utilities with no knowledge of the method: atomic writes, error types, version shims,
stop requests, quiet libraries, reference-image reading and threestudio's trial tags."""
