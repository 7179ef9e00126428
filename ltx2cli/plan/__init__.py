"""From a job to an exact RenderSpec: presets and defaults layered under the job (context), its inputs checked, fetched
and probed (inputs, remote_inputs), its LoRAs (loras), prompts (prompts: a prompt timeline placed on the clip's
frames) and output (output), all jobs of a batch at once (resolve: plan_manifests, plan_jobs, plan_command_line).
Torch-free, so `ltx2 validate` plans every job before a model loads. Hands RenderSpecs (and SpecPreviews for jobs
whose remote inputs cannot be had) to batch."""
