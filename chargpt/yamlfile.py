"""YAML as chargpt reads it: yaml.safe_load, except that a key given twice is an error."""

from __future__ import annotations

from typing import Any

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (PyYAML would silently keep the last)."""


class StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys, naming the key and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *anchor` merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(
                        None, None, f"{key!r} is given twice (lines {seen[key]} and {line})"
                    )
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader reports it as it always does
                break
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no Python objects) and strictly (no duplicate keys)."""
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: `line N: YAML syntax error: ...` or `duplicate key: ...`."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    where = f"line {mark.line + 1}: " if mark is not None else ""
    kind = "duplicate key" if isinstance(exc, DuplicateKeyError) else "YAML syntax error"
    return f"{where}{kind}: {problem}"
