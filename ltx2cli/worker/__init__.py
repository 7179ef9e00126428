"""The RunPod serverless worker: the original service's request and response shapes (schema), its environment
(config), progress updates (progress) and the handler that plans, renders and uploads each request (handler; run
it with `python -m ltx2cli.worker.handler`). The same plan, batch stages and engine as the CLI."""
