"""Study import and storage: study.toml / study.json folders, zips of them, and
JATOS study archives (.jzip), normalized into a StudyDefinition plus its files.

Reading (no database): ``read_study(path)`` for a folder, a .zip or a .jzip on
disk, ``read_study_archive(data)`` for uploaded bytes. Every problem raises
``StudyImportError(code, message)``; the message names the file and field.
The format is documented in docs/study-format.md.

Storing: ``store_study(pool, definition, files, account)`` writes version N+1
of the study with that UUID (version 1 of a new study), all in one
transaction. Older versions and their files stay, so runs keep the version
they entered with. File contents are stored once per SHA-256 (``blobs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import mimetypes
import os
import re
import secrets
import stat
import tomllib
import unicodedata
import uuid as uuid_lib
import zipfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import asyncpg
import msgspec

from results_store.accounts import Account, add_member, can_access
from results_store.definition import (
    BatchDefaults,
    Component,
    GroupSettings,
    SessionConfig,
    StudyDefinition,
    decode_definition,
    encode_definition,
)

DEFAULT_MAX_STUDY_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_STUDY_FILES = 10_000
DEFINITION_FILES = ("study.toml", "study.json")
LINK_TYPES = ("personal_single", "personal_multiple", "general_single", "general_multiple",
              "mturk", "mturk_sandbox", "preview")
MAX_ROUNDS = 1000
MAX_TITLE_CHARS = 300
STUDY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
COMPONENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UUID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Names skipped when reading a folder or an archive: OS and VCS litter.
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".git", ".svn",
                        ".hg"})
# Inserting blobs in chunks of about this many bytes per statement.
BLOB_CHUNK_BYTES = 32 * 1024 * 1024

# JATOS worker types (value, short value and UI name) -> our link types.
JATOS_WORKER_TYPES = {
    "personalsingle": "personal_single", "ps": "personal_single",
    "personalmultiple": "personal_multiple", "pm": "personal_multiple",
    "generalsingle": "general_single", "gs": "general_single",
    "generalmultiple": "general_multiple", "gm": "general_multiple",
    "mt": "mturk", "mturk": "mturk",
    "mtsandbox": "mturk_sandbox", "mts": "mturk_sandbox", "mturksandbox": "mturk_sandbox",
    "jatos": "preview", "j": "preview",
}

MEDIA_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".js": "text/javascript",
    ".mjs": "text/javascript", ".cjs": "text/javascript", ".css": "text/css",
    ".json": "application/json", ".map": "application/json", ".wasm": "application/wasm",
    ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".m4a": "audio/mp4", ".mp4": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg",
    ".txt": "text/plain", ".csv": "text/csv", ".md": "text/markdown", ".xml": "application/xml",
    ".pdf": "application/pdf", ".toml": "application/toml",
}


class StudyImportError(Exception):
    """A study that cannot be imported: ``code`` for programs, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ImportLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_bytes: int = DEFAULT_MAX_STUDY_BYTES   # all files together, uncompressed
    max_files: int = DEFAULT_MAX_STUDY_FILES

    @classmethod
    def from_settings(cls, settings: Any) -> ImportLimits:
        """From ``Settings.max_study_bytes`` / ``max_study_files`` where they exist."""
        return cls(max_bytes=int(getattr(settings, "max_study_bytes", DEFAULT_MAX_STUDY_BYTES)),
                   max_files=int(getattr(settings, "max_study_files", DEFAULT_MAX_STUDY_FILES)))


class StudySource(msgspec.Struct, kw_only=True):
    """A study read from a folder or an archive, ready for ``store_study``."""

    definition: StudyDefinition      # uuid "" when the study.toml/json gives none
    files: dict[str, bytes]          # path relative to the study assets -> content
    source: str                      # "toml", "json" or "jatos"
    slug_hint: str = ""              # preferred study id on first import


class StoredStudy(msgspec.Struct, kw_only=True):
    study_id: str
    uuid: str
    version: int
    created: bool                    # a new study (version 1)
    title: str
    file_count: int
    total_bytes: int
    new_bytes: int                   # bytes of file contents not stored before


class VersionInfo(msgspec.Struct, kw_only=True):
    version: int
    created_at: datetime
    source: str
    file_count: int
    total_bytes: int
    created_by: str | None = None


class StudySummary(msgspec.Struct, kw_only=True):
    id: str
    uuid: str
    title: str
    current_version: int
    created_at: datetime
    created_by: str | None = None


class StudyInfo(StudySummary, kw_only=True):
    members: list[str] = msgspec.field(default_factory=list)
    versions: list[VersionInfo] = msgspec.field(default_factory=list)


class FileInfo(msgspec.Struct, kw_only=True):
    path: str
    size: int
    media_type: str
    sha256: str


# ---------------------------------------------------------------------------
# Paths and media types


def safe_path(name: str, where: str) -> str:
    """A relative POSIX path with no '..', no absolute or drive part; else unsafe_path."""
    if "\x00" in name:
        raise StudyImportError("unsafe_path", f"{where}: a path contains a NUL character")
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or re.match(r"^[A-Za-z]:", cleaned):
        raise StudyImportError("unsafe_path", f"{where}: {name!r} is an absolute path")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise StudyImportError("unsafe_path", f"{where}: {name!r} leaves the study folder (..)")
    if not parts:
        raise StudyImportError("unsafe_path", f"{where}: {name!r} is not a file path")
    return unicodedata.normalize("NFC", "/".join(parts))


def guess_media_type(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or "application/octet-stream"


def _is_junk(path: str) -> bool:
    return any(part in JUNK_NAMES or part.startswith("._") for part in path.split("/"))


def slugify(text: str, max_chars: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_chars].strip("-")
    return slug or "study"


# ---------------------------------------------------------------------------
# Reading folders and archives


def read_study(path: str | Path, limits: ImportLimits | None = None) -> StudySource:
    """A study from a folder, a .zip or a .jzip on disk."""
    limits = limits or ImportLimits()
    path = Path(path)
    if path.is_dir():
        return _from_files(_read_directory(path, limits), path.name)
    if not path.is_file():
        raise StudyImportError("not_found", f"{path}: no such file or folder")
    size = path.stat().st_size
    if size > limits.max_bytes + 64 * 1024 * 1024:
        raise StudyImportError("too_large", f"{path.name}: the archive has {size} bytes, more "
                               f"than the limit of {limits.max_bytes}")
    return read_study_archive(path.read_bytes(), path.name, limits)


def read_study_archive(data: bytes, filename: str = "upload",
                       limits: ImportLimits | None = None) -> StudySource:
    """A study from the bytes of a .zip (study.toml/json folder) or a JATOS .jzip."""
    limits = limits or ImportLimits()
    name = PurePosixPath(filename.replace("\\", "/")).name or "upload"
    return _from_files(_read_zip(data, name, limits), name)


def _read_directory(root: Path, limits: ImportLimits) -> dict[str, bytes]:
    root = root.resolve()
    found: list[tuple[str, Path]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        for name in sorted(filenames):
            if _is_junk(name):
                continue
            file = here / name
            rel = file.relative_to(root).as_posix()
            where = f"{root.name}/{rel}"
            info = file.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = file.resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    raise StudyImportError("unsafe_path", f"{where}: a symbolic link to a file "
                                           "outside the study folder")
                info = target.stat()
            elif not stat.S_ISREG(info.st_mode):
                continue
            found.append((safe_path(rel, where), file))
            total += info.st_size
            if len(found) > limits.max_files:
                raise StudyImportError("too_many_files", f"{root.name}: more than "
                                       f"{limits.max_files} files")
            if total > limits.max_bytes:
                raise StudyImportError("too_large", f"{root.name}: the files add up to more "
                                       f"than {limits.max_bytes} bytes")
    files: dict[str, bytes] = {}
    for rel, file in found:
        files[rel] = file.read_bytes()
    if sum(len(content) for content in files.values()) > limits.max_bytes:
        raise StudyImportError("too_large", f"{root.name}: the files add up to more than "
                               f"{limits.max_bytes} bytes")
    return files


def _read_zip(data: bytes, filename: str, limits: ImportLimits) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise StudyImportError("bad_archive", f"{filename}: not a zip archive") from None
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if len(entries) > limits.max_files:
            raise StudyImportError("too_many_files", f"{filename}: more than "
                                   f"{limits.max_files} files")
        declared = 0
        wanted: list[tuple[str, zipfile.ZipInfo]] = []
        for info in entries:
            where = f"{filename}: {info.filename}"
            path = safe_path(info.filename, where)
            if _is_junk(path):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise StudyImportError("unsafe_path", f"{where}: symbolic links are not allowed")
            if info.flag_bits & 0x1:
                raise StudyImportError("bad_archive", f"{where}: encrypted entries are not "
                                       "supported")
            declared += info.file_size
            if declared > limits.max_bytes:
                raise StudyImportError("too_large", f"{filename}: the files add up to more than "
                                       f"{limits.max_bytes} bytes")
            wanted.append((path, info))
        files: dict[str, bytes] = {}
        total = 0
        for path, info in wanted:
            if path in files:
                raise StudyImportError("bad_archive", f"{filename}: {path} appears twice")
            try:
                with archive.open(info) as member:
                    # Never trust the header: read at most one byte past the declared size.
                    content = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError,
                    RuntimeError) as exc:
                raise StudyImportError("bad_archive", f"{filename}: {info.filename}: "
                                       f"cannot be read ({exc})") from None
            if len(content) > info.file_size:
                raise StudyImportError("bad_archive", f"{filename}: {info.filename}: larger "
                                       "than its header says")
            total += len(content)
            if total > limits.max_bytes:
                raise StudyImportError("too_large", f"{filename}: the files add up to more than "
                                       f"{limits.max_bytes} bytes")
            files[path] = content
    return files


def _from_files(files: dict[str, bytes], name: str) -> StudySource:
    """Find the study description among the files: a JATOS .jas, a study.toml or a
    study.json, at the top or else inside the one top folder."""
    found = _from_top(files, name)
    if found is None:
        tops = {path.split("/", 1)[0] for path in files}
        if len(tops) == 1 and all("/" in path for path in files):
            top = tops.pop()
            inner = {path[len(top) + 1:]: content for path, content in files.items()}
            found = _from_top(inner, top)
    if found is None:
        raise StudyImportError("no_definition", f"{name}: found no study.toml, study.json or "
                               "JATOS .jas file (at the top or inside one top folder)")
    return found


def _from_top(files: dict[str, bytes], name: str) -> StudySource | None:
    top_jas = [path for path in files if "/" not in path and path.lower().endswith(".jas")]
    if len(top_jas) > 1:
        raise StudyImportError("bad_archive", f"{name}: more than one .jas file "
                               f"({', '.join(sorted(top_jas))})")
    if top_jas:
        return _from_jatos(files, top_jas[0], name)
    present = [f for f in DEFINITION_FILES if f in files]
    if not present:
        return None
    if len(present) > 1:
        raise StudyImportError("ambiguous_definition", f"{name}: has both study.toml and "
                               "study.json; keep one")
    def_name = present[0]
    raw = files[def_name]
    assets = {path: content for path, content in files.items() if path != def_name}
    where = f"{name}/{def_name}" if name else def_name
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StudyImportError("bad_encoding", f"{where}: not UTF-8 text") from None
    if def_name == "study.toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise StudyImportError("bad_toml", f"{where}: {exc}") from None
        source = "toml"
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StudyImportError("bad_json", f"{where}: {exc}") from None
        if not isinstance(doc, dict):
            raise StudyImportError("bad_json", f"{where}: the top level must be an object")
        source = "json"
    definition, slug = _parse_definition(doc, assets, where)
    return StudySource(definition=definition, files=assets, source=source,
                       slug_hint=slug or slugify(definition.title))


# ---------------------------------------------------------------------------
# study.toml / study.json


_TOP_KEYS = {"id", "uuid", "title", "description", "components", "json_input", "linear",
             "end_redirect_url", "group_study", "groups", "session_config", "properties",
             "batch"}
_COMPONENT_KEYS = {"id", "title", "html_file", "json_input", "reloadable", "active", "rounds",
                   "comments"}
_GROUP_KEYS = {"max_active_members", "max_total_members", "form_by_arrival",
               "arrival_timeout_s"}
_BATCH_KEYS = {"max_total_participants", "allowed_link_types", "json_input"}


class _Fields:
    """Typed reads from one table of the description, with errors naming the field."""

    def __init__(self, table: Any, where: str, field: str, allowed: set[str]) -> None:
        self.where, self.field = where, field
        if not isinstance(table, dict):
            raise self.error("bad_field", "must be a table/object", field)
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error("unknown_field", f"unknown key {unknown[0]!r} (known: "
                             f"{', '.join(sorted(allowed))})", field)
        self.table = table

    def error(self, code: str, text: str, field: str | None = None) -> StudyImportError:
        name = field if field is not None else self.field
        return StudyImportError(code, f"{self.where}: {name}: {text}" if name else
                                f"{self.where}: {text}")

    def name(self, key: str) -> str:
        return f"{self.field}.{key}" if self.field else key

    def str(self, key: str, default: str | None = "", max_chars: int = 100_000) -> str | None:
        value = self.table.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise self.error("bad_field", "must be a string", self.name(key))
        if len(value) > max_chars:
            raise self.error("bad_field", f"longer than {max_chars} characters", self.name(key))
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error("bad_field", "must be true or false", self.name(key))
        return value

    def int(self, key: str, default: int | None, minimum: int, maximum: int = 2**31 - 1
            ) -> int | None:
        value = self.table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error("bad_field", "must be a whole number", self.name(key))
        if not minimum <= value <= maximum:
            raise self.error("bad_field", f"must be between {minimum} and {maximum}",
                             self.name(key))
        return value

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error("bad_field", "must be a number", self.name(key))
        if value < minimum or value != value or value in (float("inf"), float("-inf")):
            raise self.error("bad_field", f"must be a finite number >= {minimum}",
                             self.name(key))
        return float(value)


def _json_input(value: Any, files: dict[str, bytes], where: str, field: str) -> Any:
    """Inline JSON input (a table / array / number / bool) or a path to a .json file."""
    if isinstance(value, str):
        path = safe_path(value, f"{where}: {field}")
        if path not in files:
            raise StudyImportError("missing_file", f"{where}: {field}: no file {path!r} in the "
                                   "study folder")
        try:
            return json.loads(files[path].decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StudyImportError("bad_json_input", f"{where}: {field}: {path} is not valid "
                                   f"JSON ({exc})") from None
    return _plain(value)


def _plain(value: Any) -> Any:
    """TOML values as JSON values (dates become ISO strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _check_uuid(value: str, where: str, field: str) -> str:
    if not UUID_RE.match(value):
        raise StudyImportError("bad_field", f"{where}: {field}: {value!r} is not a valid uuid "
                               "(1-100 letters, digits, '.', '_' or '-')")
    return value


def _check_url(value: str, where: str, field: str) -> str:
    if value and not re.match(r"^https?://[^\s]+$", value):
        raise StudyImportError("bad_field", f"{where}: {field}: must be an http(s) URL")
    return value


def _link_types(value: Any, where: str, field: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyImportError("bad_field", f"{where}: {field}: must be a list of link types")
    unknown = [v for v in value if v not in LINK_TYPES]
    if unknown:
        raise StudyImportError("bad_field", f"{where}: {field}: unknown link type "
                               f"{unknown[0]!r} (known: {', '.join(LINK_TYPES)})")
    return sorted(set(value), key=LINK_TYPES.index)


def _parse_definition(doc: dict[str, Any], files: dict[str, bytes], where: str
                      ) -> tuple[StudyDefinition, str]:
    top = _Fields(doc, where, "", _TOP_KEYS)
    title = (top.str("title", None, MAX_TITLE_CHARS) or "").strip()
    if not title:
        raise StudyImportError("missing_field", f"{where}: title: a study needs a title")
    study_id = top.str("id", "", 64) or ""
    if study_id and not STUDY_ID_RE.match(study_id):
        raise StudyImportError("bad_field", f"{where}: id: 1-64 lower-case letters, digits, "
                               "'_' or '-', starting with a letter or digit")
    study_uuid = top.str("uuid", "", 100) or ""
    if study_uuid:
        _check_uuid(study_uuid, where, "uuid")

    raw_components = doc.get("components")
    if not isinstance(raw_components, list) or not raw_components:
        raise StudyImportError("no_components", f"{where}: components: a study needs at least "
                               "one component ([[components]] with html_file)")
    components = _parse_components(raw_components, files, where)

    groups = GroupSettings()
    if "groups" in doc:
        g = _Fields(doc["groups"], where, "groups", _GROUP_KEYS)
        groups = GroupSettings(
            max_active_members=g.int("max_active_members", None, 1),
            max_total_members=g.int("max_total_members", None, 1),
            form_by_arrival=g.int("form_by_arrival", None, 1),
            arrival_timeout_s=g.number("arrival_timeout_s", 300.0, 0.001))

    session_config = SessionConfig()
    if "session_config" in doc:
        s = _Fields(doc["session_config"], where, "session_config",
                    set(doc["session_config"]) if isinstance(doc["session_config"], dict)
                    else set())
        custom = {k: _plain(v) for k, v in s.table.items()
                  if k not in ("participation_fee", "real_world_currency_per_point", "currency",
                               "custom")}
        if "custom" in s.table:
            if not isinstance(s.table["custom"], dict):
                raise s.error("bad_field", "must be a table", "session_config.custom")
            custom.update(_plain(s.table["custom"]))
        session_config = SessionConfig(
            participation_fee=s.number("participation_fee", 0.0),
            real_world_currency_per_point=s.number("real_world_currency_per_point", 1.0),
            currency=s.str("currency", "USD", 10) or "USD",
            custom=custom)

    batch_defaults = BatchDefaults()
    if "batch" in doc:
        b = _Fields(doc["batch"], where, "batch", _BATCH_KEYS)
        batch_defaults = BatchDefaults(
            max_total_participants=b.int("max_total_participants", None, 0),
            allowed_link_types=_link_types(b.table.get("allowed_link_types"), where,
                                           "batch.allowed_link_types"),
            json_input=_json_input(b.table["json_input"], files, where, "batch.json_input")
            if "json_input" in b.table else None)

    properties = doc.get("properties", {})
    if not isinstance(properties, dict):
        raise StudyImportError("bad_field", f"{where}: properties: must be a table/object")

    definition = StudyDefinition(
        uuid=study_uuid,
        title=title,
        description=top.str("description") or "",
        components=components,
        json_input=_json_input(doc["json_input"], files, where, "json_input")
        if "json_input" in doc else None,
        linear=top.bool("linear", False),
        end_redirect_url=_check_url(top.str("end_redirect_url", "", 2000) or "", where,
                                    "end_redirect_url"),
        group_study=top.bool("group_study", False),
        groups=groups,
        session_config=session_config,
        properties=_plain(properties),
        batch_defaults=batch_defaults,
    )
    return definition, study_id


def _parse_components(raw: list[Any], files: dict[str, bytes], where: str) -> list[Component]:
    tables = [_Fields(item, where, f"components[{i}]", _COMPONENT_KEYS)
              for i, item in enumerate(raw)]
    explicit: dict[str, int] = {}
    for i, t in enumerate(tables):
        cid = t.str("id", "", 64) or ""
        if not cid:
            continue
        if not COMPONENT_ID_RE.match(cid):
            raise t.error("bad_field", "1-64 letters, digits, '.', '_' or '-'", t.name("id"))
        if cid in explicit:
            raise StudyImportError("duplicate_component_id", f"{where}: components[{i}].id: "
                                   f"{cid!r} is also the id of components[{explicit[cid]}]")
        explicit[cid] = i
    taken = set(explicit)
    components = []
    for t in tables:
        html = t.str("html_file", None, 1000)
        if not html:
            raise t.error("missing_field", "every component needs an html_file",
                          t.name("html_file"))
        html_file = safe_path(html, f"{where}: {t.name('html_file')}")
        active = t.bool("active", True)
        if active and html_file not in files:
            raise StudyImportError("missing_html_file", f"{where}: {t.name('html_file')}: no "
                                   f"file {html_file!r} in the study folder")
        cid = t.str("id", "", 64) or ""
        if not cid:
            cid = _auto_id(PurePosixPath(html_file).stem, taken)
        taken.add(cid)
        components.append(Component(
            id=cid,
            title=(t.str("title", "", MAX_TITLE_CHARS) or "").strip() or
            PurePosixPath(html_file).stem,
            html_file=html_file,
            json_input=_json_input(t.table["json_input"], files, where, t.name("json_input"))
            if "json_input" in t.table else None,
            reloadable=t.bool("reloadable", False),
            active=active,
            rounds=t.int("rounds", 1, 1, MAX_ROUNDS) or 1,
            comments=t.str("comments") or "",
        ))
    return components


def _auto_id(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:56] or "component"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


# ---------------------------------------------------------------------------
# JATOS study archives (.jzip: a .jas JSON description plus the assets folder)
#
# .jas format (JATOS docs "JATOS Study Archive (JZIP)", JATOS's
# StudyUploadUnmarshaller and ImportExportService): {"version": "3", "data": {
# uuid, title, description, groupStudy, linearStudy, allowPreview, dirName,
# comments, jsonData (a JSON text), endRedirectUrl, studyEntryMsg,
# componentList: [{uuid, title, htmlFilePath, reloadable, active, comments,
# jsonData}], batchList: [{uuid, title, active, maxActiveMembers,
# maxTotalMembers, maxTotalWorkers, allowedWorkerTypes, comments, jsonData}]}}.
# Version 2 (and 0) has no batchList; newer JATOS also writes studyInput /
# componentInput / batchInput for jsonData. The assets folder is the one folder
# at the top of the archive (JATOS takes it whatever its name).


def _from_jatos(files: dict[str, bytes], jas_path: str, name: str) -> StudySource:
    where = f"{name}/{jas_path}" if name else jas_path
    try:
        doc = json.loads(files[jas_path].decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyImportError("bad_jas", f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise StudyImportError("bad_jas", f"{where}: expected {{\"version\": ..., \"data\": "
                               "{...}}")
    try:
        version = int(doc.get("version", 0))
    except (TypeError, ValueError):
        raise StudyImportError("bad_jas", f"{where}: version: not a number") from None
    if version > 3:
        raise StudyImportError("unsupported_version", f"{where}: version {version} is newer "
                               "than the JATOS study format this server reads (3)")
    if version not in (0, 2, 3):
        raise StudyImportError("unsupported_version", f"{where}: version {version} is not a "
                               "JATOS study format version (2 or 3)")
    data = doc["data"]

    def text(table: dict[str, Any], key: str, field: str, required: bool = False) -> str:
        value = table.get(key)
        if value is None:
            if required:
                raise StudyImportError("missing_field", f"{where}: {field}: required")
            return ""
        if not isinstance(value, str):
            raise StudyImportError("bad_field", f"{where}: {field}: must be a string")
        if required and not value.strip():
            raise StudyImportError("missing_field", f"{where}: {field}: must not be empty")
        return value

    def flag(table: dict[str, Any], key: str, field: str, default: bool) -> bool:
        value = table.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise StudyImportError("bad_field", f"{where}: {field}: must be true or false")
        return value

    def count(table: dict[str, Any], key: str, field: str) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StudyImportError("bad_field", f"{where}: {field}: must be a whole number >= 0")
        return value

    def json_data(table: dict[str, Any], keys: tuple[str, ...], field: str) -> Any:
        for key in keys:
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                return value  # hand-written .jas files may inline the JSON
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise StudyImportError("bad_json_input", f"{where}: {field}: not valid JSON "
                                       f"({exc})") from None
        return None

    study_uuid = _check_uuid(text(data, "uuid", "data.uuid", required=True), where, "data.uuid")
    title = text(data, "title", "data.title", required=True).strip()[:MAX_TITLE_CHARS]
    dir_name = text(data, "dirName", "data.dirName", required=True)

    # The assets folder: the only folder at the top (JATOS), or the one named dirName.
    tops = sorted({path.split("/", 1)[0] for path in files if "/" in path})
    if len(tops) > 1:
        if dir_name not in tops:
            raise StudyImportError("bad_archive", f"{name}: more than one folder at the top "
                                   f"({', '.join(tops)}) and none is dirName {dir_name!r}")
        tops = [dir_name]
    prefix = tops[0] + "/" if tops else None
    assets = {path[len(prefix):]: content for path, content in files.items()
              if prefix and path.startswith(prefix)}

    raw_components = data.get("componentList")
    if not isinstance(raw_components, list):
        raise StudyImportError("missing_field", f"{where}: data.componentList: required (a list)")
    if not raw_components:
        raise StudyImportError("no_components", f"{where}: data.componentList: the study has "
                               "no components")
    components: list[Component] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_components):
        field = f"data.componentList[{i}]"
        if not isinstance(item, dict):
            raise StudyImportError("bad_field", f"{where}: {field}: must be an object")
        cid = text(item, "uuid", f"{field}.uuid", required=True)
        if not COMPONENT_ID_RE.match(cid):
            raise StudyImportError("bad_field", f"{where}: {field}.uuid: {cid!r} is not a "
                                   "valid component id")
        if cid in seen:
            raise StudyImportError("duplicate_component_id", f"{where}: {field}.uuid: {cid!r} "
                                   f"is also the uuid of componentList[{seen[cid]}]")
        seen[cid] = i
        html = text(item, "htmlFilePath", f"{field}.htmlFilePath", required=True).lstrip("/")
        html_file = safe_path(html, f"{where}: {field}.htmlFilePath")
        active = flag(item, "active", f"{field}.active", True)
        if active and html_file not in assets:
            raise StudyImportError("missing_html_file", f"{where}: {field}.htmlFilePath: no "
                                   f"file {html_file!r} in the study assets folder "
                                   f"{prefix or dir_name + '/'}")
        components.append(Component(
            id=cid,
            title=text(item, "title", f"{field}.title", required=True).strip()[:MAX_TITLE_CHARS],
            html_file=html_file,
            json_input=json_data(item, ("jsonData", "componentInput"), f"{field}.jsonData"),
            reloadable=flag(item, "reloadable", f"{field}.reloadable", False),
            active=active,
            comments=text(item, "comments", f"{field}.comments"),
        ))

    groups = GroupSettings()
    batch_defaults = BatchDefaults()
    jatos: dict[str, Any] = {
        "version": str(doc.get("version")),
        "dirName": dir_name,
        "comments": text(data, "comments", "data.comments") or None,
        "studyEntryMsg": text(data, "studyEntryMsg", "data.studyEntryMsg") or None,
        "allowPreview": flag(data, "allowPreview", "data.allowPreview", False),
    }
    batches = data.get("batchList") or []
    if not isinstance(batches, list) or not all(isinstance(b, dict) for b in batches):
        raise StudyImportError("bad_field", f"{where}: data.batchList: must be a list of objects")
    worker_types: Any = data.get("allowedWorkerList") if version < 3 else None
    if batches:
        first, field = batches[0], "data.batchList[0]"
        groups = GroupSettings(
            max_active_members=count(first, "maxActiveMembers", f"{field}.maxActiveMembers"),
            max_total_members=count(first, "maxTotalMembers", f"{field}.maxTotalMembers"))
        worker_types = first.get("allowedWorkerTypes")
        batch_defaults = BatchDefaults(
            max_total_participants=count(first, "maxTotalWorkers", f"{field}.maxTotalWorkers"),
            json_input=json_data(first, ("jsonData", "batchInput"), f"{field}.jsonData"))
        jatos["batch"] = {key: value for key, value in {
            "uuid": first.get("uuid"), "title": first.get("title"),
            "active": first.get("active"), "comments": first.get("comments"),
        }.items() if value is not None}
    if worker_types is not None:
        field = "data.batchList[0].allowedWorkerTypes" if batches else "data.allowedWorkerList"
        if not isinstance(worker_types, list) or not all(isinstance(w, str)
                                                         for w in worker_types):
            raise StudyImportError("bad_field", f"{where}: {field}: must be a list of strings")
        mapped = []
        for worker_type in worker_types:
            key = re.sub(r"[\s_-]+", "", worker_type).lower()
            if key not in JATOS_WORKER_TYPES:
                raise StudyImportError("bad_field", f"{where}: {field}: unknown JATOS worker "
                                       f"type {worker_type!r}")
            mapped.append(JATOS_WORKER_TYPES[key])
        batch_defaults.allowed_link_types = sorted(set(mapped), key=LINK_TYPES.index)

    definition = StudyDefinition(
        uuid=study_uuid,
        title=title,
        description=text(data, "description", "data.description"),
        components=components,
        json_input=json_data(data, ("jsonData", "studyInput"), "data.jsonData"),
        linear=flag(data, "linearStudy", "data.linearStudy", False),
        end_redirect_url=_check_url(text(data, "endRedirectUrl", "data.endRedirectUrl").strip(),
                                    where, "data.endRedirectUrl"),
        group_study=flag(data, "groupStudy", "data.groupStudy", False),
        groups=groups,
        properties={"jatos": {k: v for k, v in jatos.items() if v is not None}},
        batch_defaults=batch_defaults,
    )
    return StudySource(definition=definition, files=assets, source="jatos",
                       slug_hint=slugify(dir_name) if dir_name else slugify(title))


# ---------------------------------------------------------------------------
# Storing and loading


async def import_study(pool: asyncpg.Pool, source: StudySource, account: Account | None, *,
                       into_study: str | None = None) -> StoredStudy:
    return await store_study(pool, source.definition, source.files, account,
                             source=source.source, slug_hint=source.slug_hint,
                             into_study=into_study)


async def store_study(pool: asyncpg.Pool, definition: StudyDefinition,
                      files: dict[str, bytes], account: Account | None, *, source: str = "",
                      slug_hint: str = "", into_study: str | None = None) -> StoredStudy:
    """Store ``definition`` and ``files`` as the next version of the study with its uuid.

    A new uuid makes a new study (version 1) with ``account`` as its first member.
    An existing one needs ``account`` to have access (``forbidden`` otherwise).
    ``into_study`` names the study this must become a version of: the uuid is taken
    from it when the definition has none, and must match when it has one.
    ``account=None`` (the command line) acts as an administrator."""
    hashes = await asyncio.to_thread(
        lambda: {path: hashlib.sha256(content).digest() for path, content in files.items()})
    by_hash = {digest: files[path] for path, digest in hashes.items()}
    async with pool.acquire() as conn, conn.transaction():
        if into_study is not None:
            row = await conn.fetchrow("SELECT uuid FROM studies WHERE id = $1", into_study)
            if row is None:
                raise StudyImportError("study_not_found", f"there is no study {into_study!r}")
            if definition.uuid and definition.uuid != row["uuid"]:
                raise StudyImportError("uuid_mismatch", f"the study's uuid {definition.uuid!r} "
                                       f"is not the uuid of study {into_study!r}")
            definition = msgspec.structs.replace(definition, uuid=row["uuid"])
        elif not definition.uuid:
            definition = msgspec.structs.replace(definition, uuid=str(uuid_lib.uuid4()))
        study_id, version, created = await _claim_version(conn, definition, account, slug_hint)
        await conn.execute(
            "INSERT INTO study_versions (study_id, version, definition, source, file_count, "
            "total_bytes, created_by) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)",
            study_id, version, encode_definition(definition).decode(), source, len(files),
            sum(len(c) for c in files.values()), account.id if account and account.id else None)
        new_bytes = await _store_blobs(conn, by_hash)
        ordered = sorted(files)
        await conn.execute(
            "INSERT INTO study_files (study_id, version, path, sha256, size, media_type) "
            "SELECT $1, $2, p, h, s, m FROM unnest($3::text[], $4::bytea[], $5::bigint[], "
            "$6::text[]) AS f(p, h, s, m)",
            study_id, version, ordered, [hashes[p] for p in ordered],
            [len(files[p]) for p in ordered], [guess_media_type(p) for p in ordered])
    return StoredStudy(study_id=study_id, uuid=definition.uuid, version=version, created=created,
                       title=definition.title, file_count=len(files),
                       total_bytes=sum(len(c) for c in files.values()), new_bytes=new_bytes)


async def _claim_version(conn: asyncpg.Connection, definition: StudyDefinition,
                         account: Account | None, slug_hint: str) -> tuple[str, int, bool]:
    """Lock (or create) the study row of the definition's uuid; answer its next version."""
    base = slug_hint if STUDY_ID_RE.match(slug_hint or "") else slugify(definition.title)
    candidates = [base] + [f"{base[:55]}-{secrets.token_hex(3)}" for _ in range(8)]
    for candidate in candidates:
        row = await conn.fetchrow(
            "SELECT id, current_version FROM studies WHERE uuid = $1 FOR UPDATE",
            definition.uuid)
        if row is not None:
            if account is not None and not await can_access(conn, account, row["id"]):
                raise StudyImportError("forbidden", f"a study with uuid {definition.uuid} "
                                       f"exists ({row['id']}) and you are not one of its members")
            version = row["current_version"] + 1
            await conn.execute("UPDATE studies SET current_version = $2, title = $3 "
                               "WHERE id = $1", row["id"], version, definition.title)
            return row["id"], version, False
        # ON CONFLICT without a target: a taken id or a concurrently imported uuid.
        inserted = await conn.fetchval(
            "INSERT INTO studies (id, uuid, title, current_version, created_by) "
            "VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING RETURNING id",
            candidate, definition.uuid, definition.title,
            account.id if account and account.id else None)
        if inserted is not None:
            if account is not None and account.id:
                await add_member(conn, inserted, account.id)
            return inserted, 1, True
    raise StudyImportError("study_id_taken", f"could not find a free study id for {base!r}")


async def _store_blobs(conn: asyncpg.Connection, by_hash: dict[bytes, bytes]) -> int:
    """Insert the contents not stored yet; answer how many bytes were new."""
    if not by_hash:
        return 0
    present = {row["sha256"] for row in await conn.fetch(
        "SELECT sha256 FROM blobs WHERE sha256 = ANY($1::bytea[])", list(by_hash))}
    missing = [digest for digest in by_hash if digest not in present]
    new_bytes = 0
    for chunk in _chunks(missing, by_hash):
        await conn.execute(
            "INSERT INTO blobs (sha256, size, content) SELECT h, s, c FROM "
            "unnest($1::bytea[], $2::bigint[], $3::bytea[]) AS b(h, s, c) ON CONFLICT DO NOTHING",
            chunk, [len(by_hash[d]) for d in chunk], [by_hash[d] for d in chunk])
        new_bytes += sum(len(by_hash[d]) for d in chunk)
    return new_bytes


def _chunks(digests: list[bytes], by_hash: dict[bytes, bytes]) -> Iterable[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for digest in digests:
        chunk.append(digest)
        size += len(by_hash[digest])
        if size >= BLOB_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


async def current_version(pool: asyncpg.Pool, study_id: str) -> int | None:
    return await pool.fetchval("SELECT current_version FROM studies WHERE id = $1", study_id)


async def load_definition(pool: asyncpg.Pool, study_id: str, version: int | None = None
                          ) -> StudyDefinition | None:
    """A version's definition (the current one when ``version`` is None)."""
    if version is None:
        raw = await pool.fetchval(
            "SELECT v.definition::text FROM study_versions v JOIN studies s "
            "ON s.id = v.study_id AND s.current_version = v.version WHERE s.id = $1", study_id)
    else:
        raw = await pool.fetchval(
            "SELECT definition::text FROM study_versions WHERE study_id = $1 AND version = $2",
            study_id, version)
    return decode_definition(raw) if raw is not None else None


async def load_file(pool: asyncpg.Pool, study_id: str, version: int, path: str
                    ) -> tuple[bytes, str] | None:
    """A file of a study version and its media type, or None."""
    row = await pool.fetchrow(
        "SELECT b.content, f.media_type FROM study_files f JOIN blobs b ON b.sha256 = f.sha256 "
        "WHERE f.study_id = $1 AND f.version = $2 AND f.path = $3", study_id, version, path)
    return (row["content"], row["media_type"]) if row else None


async def list_files(pool: asyncpg.Pool, study_id: str, version: int) -> list[FileInfo]:
    rows = await pool.fetch(
        "SELECT path, size, media_type, sha256 FROM study_files WHERE study_id = $1 AND "
        "version = $2 ORDER BY path", study_id, version)
    return [FileInfo(path=r["path"], size=r["size"], media_type=r["media_type"],
                     sha256=r["sha256"].hex()) for r in rows]


_SUMMARY = ("SELECT s.id, s.uuid, s.title, s.current_version, s.created_at, "
            "a.username AS created_by FROM studies s LEFT JOIN accounts a ON a.id = s.created_by")


async def list_studies(pool: asyncpg.Pool, account: Account) -> list[StudySummary]:
    """The studies ``account`` may touch (every study for admins), newest first."""
    if account.is_admin:
        rows = await pool.fetch(f"{_SUMMARY} ORDER BY s.created_at DESC, s.id")
    else:
        rows = await pool.fetch(
            f"{_SUMMARY} JOIN study_members m ON m.study_id = s.id AND m.account_id = $1 "
            "ORDER BY s.created_at DESC, s.id", account.id)
    return [StudySummary(**dict(row)) for row in rows]


async def get_study(pool: asyncpg.Pool, study_id: str) -> StudyInfo | None:
    row = await pool.fetchrow(f"{_SUMMARY} WHERE s.id = $1", study_id)
    if row is None:
        return None
    versions = await pool.fetch(
        "SELECT v.version, v.created_at, v.source, v.file_count, v.total_bytes, "
        "a.username AS created_by FROM study_versions v LEFT JOIN accounts a "
        "ON a.id = v.created_by WHERE v.study_id = $1 ORDER BY v.version", study_id)
    members = await pool.fetch(
        "SELECT a.username FROM study_members m JOIN accounts a ON a.id = m.account_id "
        "WHERE m.study_id = $1 ORDER BY a.username", study_id)
    return StudyInfo(**dict(row), members=[m["username"] for m in members],
                     versions=[VersionInfo(**dict(v)) for v in versions])
