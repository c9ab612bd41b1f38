"""YAML loading that remembers where every value came from, and strict validation against it.

Why: an operator who mistypes ``max_concurency`` in a 200-line config must
get ``configs/prod.yaml:57: backends[2].max_concurency: unknown key``, not a
generic pydantic dump or, worse, a silently ignored key. We compose the YAML
node graph (which carries marks), build plain Python values from it while
recording the line of every path, then validate with a pydantic model whose
errors are translated back to lines.

Duplicate mapping keys are errors (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file could not be loaded; ``str()`` is a ready-to-print message."""

    def __init__(self, path: str, problems: Sequence[tuple[int | None, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = [f"{path}:{line if line is not None else '?'}: {msg}" for line, msg in self.problems]
        super().__init__("\n".join(lines))


@dataclass(slots=True)
class SourceMap:
    """Line numbers (1-based) of every mapping key and sequence item of a loaded file."""

    path: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of ``loc`` or of its nearest ancestor that has one."""
        probe = tuple(loc)
        while True:
            if probe in self.lines:
                return self.lines[probe]
            if not probe:
                return None
            probe = probe[:-1]

    def where(self, loc: Loc) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line if line is not None else '?'}"


def format_loc(loc: Loc) -> str:
    """``("backends", 2, "url")`` -> ``backends[2].url``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _build(node: yaml.Node, loc: Loc, source: SourceMap, path: str) -> Any:
    source.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise ConfigError(
                    path, [(key_node.start_mark.line + 1, f"{format_loc(loc)}: keys must be strings")]
                )
            if key in result:
                raise ConfigError(
                    path, [(key_node.start_mark.line + 1, f"{format_loc((*loc, key))}: duplicate key")]
                )
            child = (*loc, key)
            source.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, source, path)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*loc, i)
            source.lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, source, path))
        return items
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    """Resolve a scalar node's tag (int, float, bool, null, str) as ``yaml.safe_load`` would."""
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def load_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Parse a YAML file into plain values plus a ``SourceMap``; errors name file and line."""
    path_str = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path_str, [(None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path_str, [(None, f"cannot read file: {exc}")]) from None
    return load_yaml_text(text, path_str)


def load_yaml_text(text: str, path: str = "<string>") -> tuple[Any, SourceMap]:
    source = SourceMap(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ConfigError(path, [(line, f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [(None, f"invalid YAML: {exc}")]) from None
    if node is None:
        return {}, source
    return _build(node, (), source, path), source


def validate(model: type[ModelT], data: Any, source: SourceMap) -> ModelT:
    """Validate ``data`` against ``model``; on failure raise ``ConfigError`` with one line per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, source) from None


def config_error_from_validation(exc: ValidationError, source: SourceMap, prefix: Loc = ()) -> ConfigError:
    problems: list[tuple[int | None, str]] = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *(p for p in err["loc"] if isinstance(p, str | int)))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append((source.line_of(loc), f"{format_loc(loc)}: {msg}"))
    return ConfigError(source.path, problems)


def mapping_at(data: Any, loc: Loc) -> Mapping[str, Any] | None:
    """The mapping at ``loc`` inside loaded data, or None."""
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur if isinstance(cur, Mapping) else None
