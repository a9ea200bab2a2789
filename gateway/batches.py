"""Opening batches in the event log and keeping their group limits there."""

from __future__ import annotations

import uuid

from gateway.hub import Hub
from results_store.catalog import Batch
from session_store.commands import OpenBatch, Outcome
from session_store.events import GroupLimits


def group_limits(batch: Batch) -> GroupLimits:
    groups = batch.group_settings
    return GroupLimits(max_active_members=groups.max_active_members if groups else None,
                       max_total_members=groups.max_total_members if groups else None)


async def open_batch(hub: Hub, batch_id: str, label: str,
                     groups: GroupLimits | None = None) -> Outcome:
    command = OpenBatch(id=f"open-{uuid.uuid4().hex}", batch=batch_id, run="admin",
                        gw=hub.gateway_id, label=label, groups=groups or GroupLimits())
    return await hub.request(command)
