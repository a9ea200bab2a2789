"""A study's definition, normalized: what every import format (study.toml,
study.json, JATOS .jzip) is turned into, and what runs pin by version."""

from __future__ import annotations

from typing import Any

import msgspec


class Component(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str                      # stable id (the JATOS component uuid when imported)
    title: str
    html_file: str               # entry page, relative to the study's assets
    json_input: Any = None
    reloadable: bool = False     # JATOS: reloading a non-reloadable component fails the run
    active: bool = True          # inactive components are skipped by startNextComponent
    rounds: int = 1              # oTree: rounds of this app (player rows per participant)
    comments: str = ""


class GroupSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """JATOS group settings (batch level in JATOS; defaults per study here)."""

    max_active_members: int | None = None
    max_total_members: int | None = None
    # oTree group-by-arrival: a group forms once this many are waiting.
    form_by_arrival: int | None = None
    arrival_timeout_s: float = 300.0


class SessionConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """oTree's session config: pay and custom keys."""

    participation_fee: float = 0.0
    real_world_currency_per_point: float = 1.0
    currency: str = "USD"
    custom: dict[str, Any] = msgspec.field(default_factory=dict)


class BatchDefaults(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Settings a new batch of this study starts with (JATOS: the first batch of
    the archive's batchList). ``None`` means no limit / every link type."""

    max_total_participants: int | None = None
    allowed_link_types: list[str] | None = None
    json_input: Any = None


class StudyDefinition(msgspec.Struct, kw_only=True, omit_defaults=True):
    uuid: str
    title: str
    description: str = ""
    components: list[Component]
    json_input: Any = None
    linear: bool = False          # JATOS "linear study flow": no going back
    end_redirect_url: str = ""
    group_study: bool = False
    groups: GroupSettings = msgspec.field(default_factory=GroupSettings)
    session_config: SessionConfig = msgspec.field(default_factory=SessionConfig)
    # Free-form extra properties (JATOS "study properties" not modelled above).
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    batch_defaults: BatchDefaults = msgspec.field(default_factory=BatchDefaults)

    def component_index(self, component_id: str) -> int | None:
        for index, component in enumerate(self.components):
            if component.id == component_id:
                return index
        return None


def encode_definition(definition: StudyDefinition) -> bytes:
    return msgspec.json.encode(definition)


def decode_definition(data: bytes | str) -> StudyDefinition:
    return msgspec.json.decode(data, type=StudyDefinition)
