"""GPU memory: a render's peak estimated before anything loads (estimate), the plan chosen for a card and a batch
(residency), components placed, quantised and streamed to follow it (placement, streaming), feed-forwards in
token chunks (ffn_chunks), out-of-memory retries (retry) and --vram (vram). Needs only configs, specs and weight
headers: nothing here knows the sampler."""
