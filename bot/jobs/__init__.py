"""Durable jobs: every admitted request is stored, run once, resumed after a restart.

`model` holds the job and its validated request (pure), `billing` what a job books and settles,
`worker` the `JobRunner` that admits, runs, resumes, cancels and stops jobs, and the `Events`
protocol the Telegram side implements. Nothing in this package imports `telegram`.
"""

from bot.jobs.model import BadJob, ImageRequest, Job, Origin, decode_request, encode_request
from bot.jobs.worker import Delivered, Events, JobRunner

__all__ = [
    "BadJob",
    "Delivered",
    "Events",
    "ImageRequest",
    "Job",
    "JobRunner",
    "Origin",
    "decode_request",
    "encode_request",
]
