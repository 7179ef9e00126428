"""Running planned jobs: the runner overlaps the three stages of each job (stages: prepare its inputs, render,
deliver the MP4 and its sidecar) on threads, or sends them to a RunPod endpoint's workers (fanout, over endpoint);
it keeps the journal a rerun resumes from, selects jobs (only, limit, already done, shards balanced by cost),
runs one shard process per GPU (gpus), reports results and the contact sheet, reads runs back for `ltx2 report`
(collect), publishes a run's journal beside its gs:// outputs (publish), and stops cleanly on Ctrl-C. Takes
RenderSpecs from plan and a model source; hands frames to media and files to storage."""
