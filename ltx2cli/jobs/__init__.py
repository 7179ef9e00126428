"""What a user asks for, before anything is fetched or loaded: a job and its fields (job), the manifests that hold jobs
(manifest) and their schema problems in words (problems), the exact render a job resolves to (spec: RenderSpec,
SpecPreview), the clip's frame arithmetic (timeline; windows, with a prompt timeline's boundaries), presets, LoRA
names, the releases' differences (releases), resolved guidance (guidance), a render's estimated cost (cost) and the
worker's request limits (limits). Pure data and arithmetic: every room above reads these; this package imports only
the top-level errors."""
