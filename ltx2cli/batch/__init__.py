"""Running planned jobs: the runner overlaps the three stages of each job (stages: prepare its inputs, render,
deliver the MP4 and its sidecar) on threads, keeps the journal a rerun resumes from, selects jobs (only, shard,
limit, already done), reports results and the contact sheet, and stops cleanly on Ctrl-C. Takes RenderSpecs from
plan and a model source; hands frames to media and files to storage's sinks."""
