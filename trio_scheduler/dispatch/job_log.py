"""What a job's life says in the log.

A job that ends without a result for the user (failed, timed out) is one warning line
saying where and why; every other step — dispatched, waiting, ended — is a debug line, so
``--log-level debug`` follows each job while ``info`` stays quiet under load.
"""

from __future__ import annotations

import structlog

from trio_scheduler.dispatch.jobs import Job
from trio_scheduler.sessions.outcomes import Outcome

log = structlog.get_logger("trio_scheduler.jobs")


def _fields(job: Job, session_id: str) -> dict:
    return {"job_id": job.job_id, "session_id": session_id,
            "utterance_index": job.utterance_index, "attempt_id": job.attempt_id,
            "node_id": job.node_id}


def dispatched(job: Job, session_id: str) -> None:
    log.debug("job dispatched", **_fields(job, session_id))


def waiting(job: Job, session_id: str, *, for_capacity: bool) -> None:
    log.debug("job waiting", for_what="a free slot" if for_capacity else "a node",
              needs=job.needs.describe(), **_fields(job, session_id))


def ended(job: Job, outcome: Outcome, session_id: str) -> None:
    fields = _fields(job, session_id)
    if outcome.kind == "timeout":
        log.warning("job timed out", **fields)
    elif outcome.kind == "failed":
        code = str(outcome.error_code) if outcome.error_code else None
        log.warning("job failed", error_code=code, why=outcome.hint,
                    needs=job.needs.describe(), **fields)
    else:
        log.debug("job ended", outcome=outcome.kind, **fields)
