"""Helpers for the result tests and benchmark: a study with rounds, a batch, runs.

``make_lab(pool, participants)`` stores a three-component study (the middle one
with three rounds), makes a batch with personal single links and enters a run
per link, as ``/go/<code>`` would. ``bulk_results(pool, runs, per_run)`` fills a
batch fast with SQL for exports of thousands of results.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from gateway.tokens import TokenSigner
from results_store import catalog, studies
from results_store.definition import Component, SessionConfig, StudyDefinition

SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def three_step_study(**config: Any) -> StudyDefinition:
    custom = config.pop("custom", {"treatment": "A", "max_bonus_points": 1000})
    return StudyDefinition(
        uuid=f"results-{uuid.uuid4()}", title="Results study",
        components=[
            Component(id="intro", title="Intro", html_file="intro.html"),
            Component(id="game", title="Public goods", html_file="game.html", rounds=3),
            Component(id="survey", title="Survey", html_file="survey.html"),
        ],
        session_config=SessionConfig(
            participation_fee=config.pop("participation_fee", 2.5),
            real_world_currency_per_point=config.pop("real_world_currency_per_point", 0.01),
            currency=config.pop("currency", "EUR"), custom=custom))


PAGES = {"intro.html": b"<p>intro</p>", "game.html": b"<p>game</p>",
         "survey.html": b"<p>survey</p>"}


@dataclass
class Lab:
    study_id: str
    version: int
    batch_id: str
    definition: StudyDefinition
    runs: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


async def make_lab(pool: asyncpg.Pool, participants: int = 3, *, secret: str = SECRET,
                   definition: StudyDefinition | None = None, link_type: str = "personal_single",
                   preview: int = 0) -> Lab:
    definition = definition or three_step_study()
    stored = await studies.store_study(pool, definition, PAGES, None)
    batch = await catalog.create_batch(pool, stored.study_id, label="Tuesday 3 PM")
    lab = Lab(stored.study_id, stored.version, batch.id, definition)
    signer = TokenSigner(secret, 3600)
    labels = [f"p{i + 1}-{uuid.uuid4().hex[:4]}" for i in range(participants)]
    links = await catalog.create_links(pool, batch.id, link_type, labels=labels) \
        if participants else []
    previews = await catalog.create_links(pool, batch.id, "preview", count=preview) \
        if preview else []
    for i, link in enumerate([*links, *previews]):
        entered = await catalog.enter(pool, link.code, {"PROLIFIC_PID": f"pid{i}"})
        lab.runs.append(entered.run_id)
        lab.labels.append(entered.label or "")
        lab.keys.append(signer.issue(entered.run_id, batch.id, entered.study_id,
                                     entered.study_version))
    return lab


async def bulk_results(pool: asyncpg.Pool, lab: Lab, runs: int, per_run: int = 2,
                       pad: int = 40) -> int:
    """``runs`` runs in the lab's batch, each with ``per_run`` players (positions 1..,
    round 1) holding a JSON object of about 32 x ``pad`` bytes and a bonus. Answers
    how many players were made."""
    prefix = f"bulk-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO runs (id, batch_id, study_id, study_version, link_type, worker_id, "
            "label) SELECT $1 || '-' || g, $2, $3, $4, 'general_multiple', 'w' || g, "
            "'label ' || g FROM generate_series(1, $5) AS g",
            prefix, lab.batch_id, lab.study_id, lab.version, runs)
        positions = [c.id for c in lab.definition.components][:per_run]
        await conn.execute(
            "INSERT INTO component_results (run_id, pos, round, component_id, data, data_size, "
            "state, bonus) SELECT r, p, 1, ($5::text[])[p], d, octet_length(d), "
            "'result_data_posted', p FROM (SELECT $1 || '-' || g AS r, p, convert_to("
            "json_build_object('run', g, 'pos', p, 'answer', 'x' || g, 'pad', "
            "repeat(md5(g::text || '/' || p::text), $4))::text, 'UTF8') AS d "
            "FROM generate_series(1, $2) AS g, generate_series(1, $3) AS p) AS t",
            prefix, runs, per_run, pad, positions)
    return runs * per_run
