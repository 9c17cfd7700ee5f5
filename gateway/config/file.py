"""The operators' TOML file: which Twilio number goes to which handoff destination.

The file is parsed once at start-up. Any mistake stops the gateway with a single line that
names the file, the entry and the field, because an operator fixing a config at 3 a.m. should
not have to read a traceback.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.config.event_types import EVENT_TYPES, types_matching

from gateway.config.destinations import E164, Destination, check_destination, name_key

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_ACCOUNT_PREFIX = "ws-"
_PROJECT_PREFIX = "PROJECT-"


class ConfigError(SystemExit):
    """A config mistake, already phrased as the one line an operator needs.

    A SystemExit, so that left uncaught (gunicorn importing app.py) the process stops with
    exactly that line and status 1, not a traceback.
    """

    def __str__(self) -> str:
        return str(self.code)


class NumberConfig(BaseModel):
    """A Twilio number and where its callers go."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    number: str
    destination: str | None = None
    assistant_url: str | None = None
    fallback: list[str] = Field(default_factory=list)
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    a2p_10dlc: Literal["registered", "pending", "unregistered"] | None = None

    @field_validator("number")
    @classmethod
    def _e164(cls, number: str) -> str:
        """Twilio sends `To` in E.164, so anything else could never match a call."""
        if not E164.match(number):
            raise ValueError(f"{number!r} is not E.164; write it like +14155550199")
        return number

    @field_validator("assistant_url")
    @classmethod
    def _websocket(cls, url: str | None) -> str | None:
        """<Stream> only connects to WebSocket URLs."""
        if url is not None and not url.startswith("wss://"):
            raise ValueError("assistant_url must be a wss:// WebSocket URL")
        return url


#: The longest subscription URL the delivery worker can store (`event_subscriptions.url`).
EVENT_WEBHOOK_URL_MAX = 2000


class EventWebhook(BaseModel):
    """A subscription to the project's handoff events (SPEC §3 `event_webhooks`, docs/events.md)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    types: list[str] | None = Field(None, min_length=1)
    #: never accepted: named only so that putting the secret here gets a sentence saying where it goes
    secret: None = None

    @field_validator("secret", mode="before")
    @classmethod
    def _no_secret_in_the_file(cls, _secret: object) -> None:
        raise ValueError("the signing secret never goes in this file; put it in an environment variable and name that in secret_env")

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, url: str) -> str:
        """Events carry callers' data: only TLS leaves the machine.

        The host is the one the delivery worker's HTTP client (requests, through urllib3) will
        connect to, and Python's own parser must read the same: `http://evil.example\\@127.0.0.1/`
        reads as loopback to `urlsplit` but is sent to evil.example.
        """
        if len(url) > EVENT_WEBHOOK_URL_MAX:  # PostgreSQL would refuse its row on every pass of the worker
            raise ValueError(f"is {len(url)} characters long; the delivery worker keeps at most {EVENT_WEBHOOK_URL_MAX}")
        refused = "must be an https:// URL (http:// only to 127.0.0.1, ::1 or localhost)"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(refused)
        try:
            sent_to = (parse_url(url).host or "").strip("[]")
        except LocationParseError:
            raise ValueError("is not a URL an HTTP client can send to") from None
        if sent_to != parts.hostname:
            raise ValueError(f"reads as host {parts.hostname!r} but would be sent to {sent_to!r}; write it plainly")
        if parts.scheme == "https" or sent_to in _LOOPBACK_HOSTS:
            return url
        raise ValueError(refused)

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str] | None) -> list[str] | None:
        """A glob that matches no event type is a typo that would silently deliver nothing."""
        for pattern in types or []:
            if not types_matching([pattern]):
                raise ValueError(f"{pattern!r} matches no event type (known: {', '.join(EVENT_TYPES)})")
        return types

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in types_matching(self.types)


_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class ProjectConfig(BaseModel):
    """One agent's numbers and destinations."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    project_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    default_destination: str
    max_attempts: int = Field(2, ge=1, le=10)
    api_key_sha256: list[str] = Field(default_factory=list)
    assistant_webhook: str | None = Field(None, pattern=r"^https?://")
    sip_domain: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]*(:\d+)?$")
    sms_help_text: str | None = None
    destinations: list[Destination] = Field(default_factory=list)
    numbers: list[NumberConfig] = Field(default_factory=list)
    event_webhooks: list[EventWebhook] = Field(default_factory=list)

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        """Only the hash of a key belongs in the file, never the key."""
        for digest in digests:
            if not _SHA256_HEX.match(digest.lower()):
                raise ValueError("each entry must be 64 hex characters (sha256 of the key)")
        return [digest.lower() for digest in digests]

    @property
    def account_slug(self) -> str:
        return _strip_prefix(self.account_id, _ACCOUNT_PREFIX)

    @property
    def project_slug(self) -> str:
        return _strip_prefix(self.project_id, _PROJECT_PREFIX)

    @property
    def key(self) -> str:
        """The canonical `account_id/project_id` stored beside every row of this project."""
        return f"{self.account_id}/{self.project_id}"

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    def accepts_key_hash(self, key_sha256: str) -> bool:
        """Compare against every configured hash in constant time."""
        return any(hmac.compare_digest(key_sha256, digest) for digest in self.api_key_sha256)


def _strip_prefix(value: str, prefix: str) -> str:
    return value[len(prefix):] if value.lower().startswith(prefix.lower()) else value


@dataclass(frozen=True)
class NumberRoute:
    """What a call to one Twilio number needs, resolved once at start-up."""

    project: ProjectConfig
    number: NumberConfig


@dataclass
class GatewayConfig:
    """The whole file, with the look-ups the hot path needs built once."""

    path: Path
    projects: list[ProjectConfig]
    _numbers: dict[str, NumberRoute] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._numbers = {
            number.number: NumberRoute(project, number)
            for project in self.projects
            for number in project.numbers
        }

    def route_for(self, called_number: str) -> NumberRoute | None:
        return self._numbers.get(called_number)

    def find_project(self, account_id: str, project_id: str) -> ProjectConfig | None:
        """Find a project by its prefixed ids or by their bare slugs (SPEC §2)."""
        for project in self.projects:
            if account_id in (project.account_id, project.account_slug) and project_id in (
                project.project_id,
                project.project_slug,
            ):
                return project
        return None

    def project_by_key(self, key: str) -> ProjectConfig | None:
        return next((p for p in self.projects if p.key == key), None)

    def summary(self) -> str:
        """What the file routes, for `gateway check-config`."""
        lines = [f"{self.path}: OK, {len(self.projects)} project(s)"]
        for project in self.projects:
            lines.append(
                f"  {project.key}: {len(project.destinations)} destination(s), "
                f"default {project.default_destination!r}, max_attempts {project.max_attempts}"
            )
            for number in project.numbers:
                target = (
                    f"assistant {number.assistant_url}"
                    if number.assistant_url
                    else f"destination {number.destination!r}"
                )
                fallback = f" then {', '.join(number.fallback)}" if number.fallback else ""
                lines.append(f"    {number.number} -> {target}{fallback}")
            for webhook in project.event_webhooks:
                types = ", ".join(webhook.types) if webhook.types else "all types"
                lines.append(f"    events -> {webhook.url} ({types}; secret in ${webhook.secret_env})")
        return "\n".join(lines)


def load_config(path: Path | str) -> GatewayConfig:
    """Read and check the file, or raise ConfigError with the one line to show."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the file ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8-sig")  # editors that save "UTF-8 with BOM" mean UTF-8 too
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{path}: line {line} (byte {error.start}): not UTF-8 text; save the file as UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {_toml_error_location(text, error)}") from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path) -> GatewayConfig:
    """Check an already-decoded file (also used by tests that build configs in memory)."""
    unknown = set(raw) - {"projects"}
    if unknown:
        raise ConfigError(f"{path}: top level: {sorted(unknown)[0]}: unknown key; only [[projects]] belongs here")
    projects_raw = raw.get("projects", [])
    if not isinstance(projects_raw, list) or not projects_raw:
        raise ConfigError(f"{path}: top level: projects: add at least one [[projects]] table")
    projects = []
    for index, project_raw in enumerate(projects_raw):
        try:
            projects.append(ProjectConfig.model_validate(project_raw))
        except ValidationError as error:
            raise ConfigError(f"{path}: {_pydantic_location(index, project_raw, error)}") from None
    _check_references(path, projects)
    return GatewayConfig(path=path, projects=projects)


def _check_references(path: Path, projects: list[ProjectConfig]) -> None:
    """The rules that span entries: names, defaults, numbers and routes that must line up."""
    seen_projects: set[tuple[str, str]] = set()
    seen_numbers: dict[str, str] = {}
    for p_index, project in enumerate(projects):
        where = f"projects[{p_index}] ({project.key})"

        def fail(entry: str, field_name: str, problem: str) -> None:
            raise ConfigError(f"{path}: {entry}: {field_name}: {problem}")

        slugs = (project.account_slug.lower(), project.project_slug.lower())
        if slugs in seen_projects:
            fail(where, "project_id", "another project has the same account_id and project_id")
        seen_projects.add(slugs)

        names: set[str] = set()
        for d_index, destination in enumerate(project.destinations):
            entry = f"{where}.destinations[{d_index}] ({destination.name!r})"
            if name_key(destination.name) in {name_key(name) for name in names}:
                fail(entry, "name", "another destination in this project has the same name (case does not count)")
            names.add(destination.name)
            problem = check_destination(destination, sip_domain=project.sip_domain)
            if problem:
                fail(entry, *problem)

        if project.default_destination not in names:
            fail(where, "default_destination", _unknown_name(project.default_destination, names))

        for n_index, number in enumerate(project.numbers):
            entry = f"{where}.numbers[{n_index}] ({number.number})"
            if number.number in seen_numbers:
                fail(entry, "number", f"already linked in {seen_numbers[number.number]}; a number routes one way")
            seen_numbers[number.number] = entry
            if bool(number.destination) == bool(number.assistant_url):
                fail(entry, "destination", "set exactly one of destination or assistant_url")
            if number.destination and number.destination not in names:
                fail(entry, "destination", _unknown_name(number.destination, names))
            for name in number.fallback:
                if name not in names:
                    fail(entry, "fallback", _unknown_name(name, names))

        urls: set[str] = set()
        for w_index, webhook in enumerate(project.event_webhooks):
            if webhook.url in urls:
                fail(f"{where}.event_webhooks[{w_index}] ({webhook.url!r})", "url", "listed twice in this project")
            urls.add(webhook.url)


def _unknown_name(name: str, names: set[str]) -> str:
    known = ", ".join(repr(n) for n in sorted(names)) or "none defined"
    return f"no destination named {name!r} in this project (known: {known})"


def _pydantic_location(index: int, project_raw: object, error: ValidationError) -> str:
    """Phrase the first pydantic error as `projects[i].destinations[j] ('Name'): field: problem`."""
    first = error.errors()[0]
    loc = list(first["loc"])
    entry = f"projects[{index}]"
    if isinstance(project_raw, dict) and project_raw.get("account_id") and project_raw.get("project_id"):
        entry += f" ({project_raw['account_id']}/{project_raw['project_id']})"
    node: object = project_raw
    while len(loc) >= 2 and isinstance(loc[1], int) and loc[0] in ("destinations", "numbers", "event_webhooks"):
        table, position = loc[0], loc[1]
        node = node.get(table, [])[position] if isinstance(node, dict) else {}
        label = ""
        if isinstance(node, dict):
            label = node.get("name") or node.get("number") or node.get("url") or ""
        entry += f".{table}[{position}]" + (f" ({label!r})" if label else "")
        loc = loc[2:]
    field_name = ".".join(str(part) for part in loc) or "(table)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; check its spelling against gateway.example.toml"
    elif first["type"] == "missing":
        message = "required, but missing"
    elif "input" in first and first["type"] not in ("value_error",):
        message += f" (got {first['input']!r})"
    return f"{entry}: {field_name}: {message}"


def _toml_error_location(text: str, error: tomllib.TOMLDecodeError) -> str:
    """tomllib names only a line; add the table and key so the line reads like our other errors."""
    # Python 3.11's tomllib puts the position only in the message: "... (at line 5, column 3)".
    position = re.search(r"\(at line (\d+), column \d+\)$", str(error))
    message = re.sub(r"\s*\(at line .*\)$", "", str(error))
    if not position:
        return f"TOML syntax: {message}"
    lineno = int(position.group(1))
    lines = text.splitlines()
    counters: dict[str, int] = {}
    entry = "top level"
    for line in lines[:lineno]:
        header = re.match(r"^\s*\[\[\s*([A-Za-z0-9_.]+)\s*\]\]", line)
        if header:
            table = header.group(1)
            counters[table] = counters.get(table, -1) + 1
            if table == "projects":
                counters.pop("projects.destinations", None)
                counters.pop("projects.numbers", None)
                counters.pop("projects.event_webhooks", None)
                entry = f"projects[{counters[table]}]"
            else:
                parent = f"projects[{counters.get('projects', 0)}]"
                entry = f"{parent}.{table.split('.')[-1]}[{counters[table]}]"
    offending = lines[lineno - 1] if lineno - 1 < len(lines) else ""
    key = re.match(r"^\s*([A-Za-z0-9_\-\"]+)\s*=", offending)
    field_name = key.group(1).strip('"') if key else f"line {lineno}"
    if "overwrite" in message.lower():
        message = "given twice; keep one"
    return f"{entry}: {field_name}: {message} (line {lineno})"


def hash_api_key(key: str) -> str:
    """How API keys are stored and compared: their sha256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
