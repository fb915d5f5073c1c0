"""Jobs that run beside the service, from the same image: the dead-letter replay (replay.py, the
Cloud Run job `python -m service.jobs.replay`). Never imports service.web."""
