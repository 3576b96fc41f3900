"""What a job needs from a node: the pools it must belong to and the services it must have.

A job's ``pipeline`` says which stages run (PROTOCOL §2.1). The ASR, NMT and TTS stages
are service types the node reports in ``capability_by_type``, and a node without one of
them cannot run the job. ``use_semantic`` and ``use_tone`` are refinements the node
applies when it can: the real agent does not report them as service types, so they are
passed on in ``job_assign`` and never used to choose a node.

The default pipeline (ASR, NMT, TTS) needs what ``[nodes] required_services`` already
demands of every ready node, so for it the service check never removes a candidate; an
ASR-only ``utterance`` can go to a node that recognises the source language and has
nothing else ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trio_scheduler.management.pools import (
    TARGET_SERVICES,
    required_pairs,
    source_key,
    source_of,
)
from trio_scheduler.protocol.messages import Pipeline

if TYPE_CHECKING:
    from trio_scheduler.management.snapshot import NodeView

# pipeline flag -> the service type a node must have ready to run that stage
STAGE_SERVICES = {"use_asr": "asr", "use_nmt": "nmt", "use_tts": "tts"}
SELECTION_SERVICES = frozenset(STAGE_SERVICES.values())


def pipeline_services(pipeline: Pipeline) -> frozenset[str]:
    return frozenset(
        service for flag, service in STAGE_SERVICES.items() if getattr(pipeline, flag)
    )


@attrs.frozen
class Needs:
    """A node can take the job when it is in every pool of ``pools`` and has every
    service of ``services`` ready. Jobs with equal needs compete for the same nodes."""

    pools: frozenset[str]
    services: frozenset[str]

    def met_by(self, node: NodeView) -> bool:
        return self.pools <= node.pools and self.services <= node.services

    def describe(self) -> str:
        """For messages to people: ``zh:en`` or ``zh:* with asr``."""
        pools = ", ".join(sorted(self.pools))
        return f"{pools} with {', '.join(sorted(self.services))}"


def needs_for(
    pipeline: Pipeline,
    *,
    mode: str | None,
    src_lang: str,
    tgt_lang: str,
    lang_a: str | None,
    lang_b: str | None,
    auto_langs: list[str] | None,
) -> Needs:
    """With a target service (NMT or TTS) a job needs the session's directed pairs; without
    one (ASR only, say) the target language does not matter and only the sources count."""
    services = pipeline_services(pipeline)
    pools = required_pairs(mode, src_lang, tgt_lang, lang_a, lang_b, auto_langs)
    if not services & TARGET_SERVICES:
        pools = frozenset(source_key(source_of(pair)) for pair in pools)
    return Needs(pools, services)
