"""Where inputs come from and outputs go: local paths, http(s):// and gs:// (sources), the download cache with its
fetch policy (fetch, public_only), one Sink class per kind of destination (sinks), what a folder or prefix holds
(listing), and inputs staged for workers elsewhere and their outputs brought back (staging). Used by plan
(probing inputs), the engine (reading them) and batch (delivering, fanning out, reporting)."""
