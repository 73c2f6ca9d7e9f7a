"""Reading the policy file: YAML in, a validated `Policy` out, or an error naming file:line: key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ledger.errors import InvalidValue, LedgerError
from ledger.limits import GroupPolicy, LimitConfig, UserOverride
from ledger.money import usd_to_micros
from ledger.periods import Period
from ledger.price_catalog import catalog_version, find_catalog_model
from ledger.price_versions import CATALOG, POLICY
from ledger.pricing import BATCH, FEES, PROCESSING, SERVICE_TIER, SPEED, PriceSheet, Rates, Variant
from ledger.schema import NAME_LENGTH, USER_TEXT_LENGTH
from ledger.tokens import TOKEN_KINDS, TokenKind

PROVIDERS = ("anthropic", "openai", "google")
UNPRICED = "none"
# What the ledger's columns hold (ledger/schema.py): a longer value could never be applied.
MAX_USER_TEXT = USER_TEXT_LENGTH
MAX_NAME = NAME_LENGTH
MAX_TOKENS = 2**31 - 1  # models.max_output_tokens


class PolicyError(LedgerError):
    """A bad policy file; the message names the file, the line and the key."""


@dataclass(frozen=True, slots=True)
class PolicyGroup:
    name: str
    limit_micros: int | None
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyUser:
    username: str
    name: str
    email: str
    override: UserOverride | None


@dataclass(frozen=True, slots=True)
class DeclaredPrices:
    """Where a model's prices come from, and what they are."""

    source: str  # CATALOG | POLICY | UNPRICED
    detail: str  # the catalog's version and name for the model, or the policy file
    # (takes effect, prices); None: from when the file is applied. Empty: unpriced.
    schedule: tuple[tuple[datetime | None, PriceSheet], ...]


@dataclass(frozen=True, slots=True)
class PolicyModel:
    name: str
    provider: str
    enabled: bool
    aliases: tuple[str, ...]
    max_output_tokens: int | None
    prices: DeclaredPrices


@dataclass(frozen=True, slots=True)
class Policy:
    limits: LimitConfig
    groups: tuple[PolicyGroup, ...]
    users: tuple[PolicyUser, ...]
    models: tuple[PolicyModel, ...]


class _Node(dict[str, Any]):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Node:
    mapping = _Node()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:  # `? [a, b]`: a list or mapping as a key
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _shown(value: Any, limit: int = 80) -> str:
    """A value for an error message, cut short: a 1 MB name must not fill the terminal."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _Reader:
    """Walks the document, turning every problem into `file:line: path: message`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: _Node | None, key: str | None, path: str, message: str) -> PolicyError:
        line = node.key_lines.get(key, node.line) if node is not None and key else (
            node.line if node is not None else 1)
        return PolicyError(f"{self.source}:{line}: {path}: {message}")

    def mapping(self, value: Any, parent: _Node | None, key: str | None, path: str,
                allowed: set[str] | None) -> _Node:
        """`value` as a mapping whose keys are all in `allowed` (None: keys of any name)."""
        if not isinstance(value, _Node):
            raise self.fail(parent, key, path or "the policy file", "must be a mapping")
        for name in value:
            if allowed is not None and name not in allowed:
                raise self.fail(value, name, f"{path}.{name}" if path else str(name),
                                f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def field(self, node: _Node, key: str, path: str, convert: Callable[[Any], Any],
              default: Any = None, required: bool = False) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in node:
            if required:
                raise self.fail(node, None, where, "is required")
            return default
        try:
            return convert(node[key])
        except (InvalidValue, ValueError, TypeError) as exc:
            raise self.fail(node, key, where, f"{exc} (got {_shown(node[key])})") from None

    def items(self, node: _Node, key: str, path: str) -> list[Any]:
        value = node.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(node, key, f"{path}{key}", "must be a list")
        return value


def _storable(value: str, limit: int) -> str:
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters (got {len(value)})")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _text(value: Any, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return _storable(value, limit)


def _user_text(value: Any) -> str:
    return _text(value, MAX_USER_TEXT)


def _optional_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return _storable(value, MAX_USER_TEXT)


def _micros(value: Any) -> int:
    return usd_to_micros(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _positive_micros(value: Any) -> int | None:
    if value is None:
        return None
    micros = _micros(value)
    if micros <= 0:
        raise ValueError("must be a positive USD amount")
    return micros


def _price(value: Any) -> int | None:
    if value is None:
        return None
    micros = _micros(value)  # USD per 1M tokens -> micro-USD per 1M tokens
    if micros < 0:
        raise ValueError("must not be negative")
    return micros


def _positive_int(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_TOKENS:
        raise ValueError(f"must be a positive integer up to {MAX_TOKENS}")
    return value


def _user_override(value: Any) -> UserOverride | None:
    if value is None:
        return None
    if value == "unlimited":
        return UserOverride(unlimited=True)
    return UserOverride(limit_micros=_positive_micros(value))


def _names(value: Any, limit: int = MAX_NAME) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of names")
    if len(set(value)) != len(value):
        raise ValueError("lists a name twice")
    return tuple(_storable(v, limit) for v in value)


def _usernames(value: Any) -> tuple[str, ...]:
    return _names(value, MAX_USER_TEXT)


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)
    return convert


PRICE_KEYS = frozenset(kind.value for kind in TOKEN_KINDS)
VARIANT_KEYS = frozenset({SERVICE_TIER, BATCH, SPEED})


def _model_prices(r: _Reader, node: _Node, path: str, provider: str,
                  names: tuple[str, ...]) -> DeclaredPrices:
    """`pricing` omitted or `catalog`: the catalog's; `none`: unpriced; a block: its own."""
    pricing = node.get("pricing", CATALOG)
    if pricing == UNPRICED:
        return DeclaredPrices(source=UNPRICED, detail=r.source, schedule=())
    if pricing == CATALOG:
        wanted = r.field(node, "catalog_name", path, _text)
        for candidate in (wanted,) if wanted else names:
            found = find_catalog_model(provider, candidate)
            if found is not None:
                return DeclaredPrices(
                    source=CATALOG, detail=f"{catalog_version()} {provider}/{found.id}",
                    schedule=tuple((at, sheet) for at, sheet in found.schedule))
        if wanted:
            raise r.fail(node, "catalog_name", f"{path}.catalog_name",
                         f"{wanted!r} is not in the catalog for provider {provider}")
        raise r.fail(node, None, path,
                     "no price in the catalog; give pricing, catalog_name or pricing: none")
    if isinstance(pricing, str):
        raise r.fail(node, "pricing", f"{path}.pricing",
                     "must be catalog, none or a mapping of prices")
    if "catalog_name" in node:
        raise r.fail(node, "catalog_name", f"{path}.catalog_name",
                     "names catalog prices, but pricing gives prices of its own")
    return DeclaredPrices(source=POLICY, detail=r.source,
                          schedule=((None, _price_sheet(r, node, f"{path}.pricing")),))


@dataclass(frozen=True, slots=True)
class _Block:
    """One block of prices as written: flat prices per kind, and tiers above thresholds."""

    base: dict[TokenKind, int]
    tiers: tuple[tuple[int, dict[TokenKind, int]], ...]


def _price_block(r: _Reader, value: Any, parent: _Node, key: str, path: str,
                 extra: frozenset[str] = frozenset()) -> tuple[_Node, _Block]:
    node = r.mapping(value, parent, key, path, set(PRICE_KEYS | {"tiers"} | extra))

    def kinds(owner: _Node, where: str) -> dict[TokenKind, int]:
        prices = {TokenKind(k): r.field(owner, k, where, _price) for k in PRICE_KEYS}
        return {kind: price for kind, price in prices.items() if price is not None}

    tiers: list[tuple[int, dict[TokenKind, int]]] = []
    for i, item in enumerate(r.items(node, "tiers", f"{path}.")):
        where = f"{path}.tiers[{i}]"
        tier = r.mapping(item, node, "tiers", where, set(PRICE_KEYS | {"above"}))
        above = r.field(tier, "above", where, _positive_int, required=True)
        if tiers and above <= tiers[-1][0]:
            raise r.fail(tier, "above", f"{where}.above",
                         f"thresholds must ascend ({above} after {tiers[-1][0]})")
        tiers.append((above, kinds(tier, where)))
    return node, _Block(base=kinds(node, path), tiers=tuple(tiers))


def _aligned(block: _Block, thresholds: tuple[int, ...], standard: bool
             ) -> dict[TokenKind, Rates]:
    """Each kind's price in every tier of the sheet. In a tier of its own that leaves a kind
    out, the kind has no price (a gap: ledger.pricing prices it at its highest)."""
    rates: dict[TokenKind, Rates] = {}
    kinds = set(block.base) | {kind for _, prices in block.tiers for kind in prices}
    for kind in kinds:
        values: list[int | None] = []
        for total in (0, *(start + 1 for start in thresholds)):
            reached = [prices for above, prices in block.tiers if total > above]
            values.append(reached[-1].get(kind) if reached else block.base.get(kind))
        if standard or any(v is not None for v in values):
            rates[kind] = tuple(values)
    return rates


def _price_sheet(r: _Reader, model: _Node, path: str) -> PriceSheet:
    node, standard = _price_block(r, model["pricing"], model, "pricing", path,
                                  frozenset({"variants", "fees"}))
    variants: list[tuple[str, str, _Block]] = []
    if node.get("variants") is not None:
        vnode = r.mapping(node["variants"], node, "variants", f"{path}.variants",
                          set(VARIANT_KEYS))
        for dimension in (SERVICE_TIER, BATCH, SPEED):
            if dimension not in vnode:
                continue
            where = f"{path}.variants.{dimension}"
            if dimension == BATCH:
                variants.append((PROCESSING, BATCH, _price_block(
                    r, vnode[dimension], vnode, dimension, where)[1]))
                continue
            named = r.mapping(vnode[dimension], vnode, dimension, where, None)
            for value in named:
                if not isinstance(value, str) or not value.strip():
                    raise r.fail(named, value, f"{where}.{value}",
                                 "must be named (flex, priority, fast, ...)")
                variants.append((dimension, value, _price_block(
                    r, named[value], named, value, f"{where}.{value}")[1]))
    fees = {}
    if node.get("fees") is not None:
        fnode = r.mapping(node["fees"], node, "fees", f"{path}.fees", {f.value for f in FEES})
        fees = {fee: price for fee in FEES
                if (price := r.field(fnode, fee.value, f"{path}.fees", _price)) is not None}
    blocks = [standard, *(block for _, _, block in variants)]
    thresholds = tuple(sorted({above for block in blocks for above, _ in block.tiers}))
    return PriceSheet(rates=_aligned(standard, thresholds, standard=True), thresholds=thresholds,
                      variants=tuple(Variant(dimension=d, value=v,
                                             rates=_aligned(block, thresholds, standard=False))
                                     for d, v, block in variants),
                      fees=fees)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        document = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise PolicyError(f"{source}:{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    r = _Reader(source)
    if document is None:
        document = _Node()
        document.line, document.key_lines = 1, {}
    root = r.mapping(document, None, None, "", {"limits", "groups", "users", "models"})

    limits = LimitConfig()
    if root.get("limits") is not None:
        node = r.mapping(root["limits"], root, "limits", "limits",
                         {"enabled", "period", "default_limit_usd", "group_policy"})
        limits = LimitConfig(
            enabled=r.field(node, "enabled", "limits", _bool, False),
            period=Period(r.field(node, "period", "limits", _choice(*Period), "month")),
            default_limit_micros=r.field(node, "default_limit_usd", "limits", _positive_micros),
            group_policy=GroupPolicy(r.field(node, "group_policy", "limits",
                                             _choice(*GroupPolicy), "lowest")),
        )

    groups: dict[str, PolicyGroup] = {}
    for i, item in enumerate(r.items(root, "groups", "")):
        path = f"groups[{i}]"
        node = r.mapping(item, root, "groups", path, {"name", "limit_usd", "members"})
        name = r.field(node, "name", path, _text, required=True)
        if name in groups:
            raise r.fail(node, "name", f"{path}.name", f"group {name!r} is declared twice")
        groups[name] = PolicyGroup(name=name,
                                   limit_micros=r.field(node, "limit_usd", path, _positive_micros),
                                   members=r.field(node, "members", path, _usernames, ()))

    users: dict[str, PolicyUser] = {}
    for i, item in enumerate(r.items(root, "users", "")):
        path = f"users[{i}]"
        node = r.mapping(item, root, "users", path, {"username", "name", "email", "limit_usd"})
        username = r.field(node, "username", path, _user_text, required=True)
        if username in users:
            raise r.fail(node, "username", f"{path}.username",
                         f"user {username!r} is declared twice")
        users[username] = PolicyUser(
            username=username, name=r.field(node, "name", path, _optional_text, ""),
            email=r.field(node, "email", path, _optional_text, ""),
            override=r.field(node, "limit_usd", path, _user_override))

    models: dict[str, PolicyModel] = {}
    taken: dict[str, str] = {}
    for i, item in enumerate(r.items(root, "models", "")):
        path = f"models[{i}]"
        node = r.mapping(item, root, "models", path,
                         {"name", "aliases", "provider", "enabled", "max_output_tokens",
                          "pricing", "catalog_name"})
        name = r.field(node, "name", path, _text, required=True)
        aliases = r.field(node, "aliases", path, _names, ())
        for label in (name, *aliases):
            if label in taken:
                raise r.fail(node, "name" if label == name else "aliases", path,
                             f"{label!r} already names model {taken[label]!r}")
            taken[label] = name
        provider = r.field(node, "provider", path, _choice(*PROVIDERS), required=True)
        models[name] = PolicyModel(
            name=name, aliases=aliases, provider=provider,
            enabled=r.field(node, "enabled", path, _bool, True),
            max_output_tokens=r.field(node, "max_output_tokens", path, _positive_int),
            prices=_model_prices(r, node, path, provider, (name, *aliases)))

    return Policy(limits=limits, groups=tuple(groups.values()), users=tuple(users.values()),
                  models=tuple(models.values()))


def load_policy(path: str | Path) -> Policy:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{file}: cannot read policy file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{file}: not UTF-8 text") from None
    return parse_policy(text, str(file))
