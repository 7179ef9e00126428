"""Where inputs come from and outputs go: local paths, http(s):// and gs:// (sources), the download cache with its
fetch policy (fetch, public_only), and one Sink class per kind of destination (sinks). Used by plan (probing
inputs), the engine (reading them) and batch (delivering)."""
