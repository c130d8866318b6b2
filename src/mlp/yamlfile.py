"""Reading a YAML file the way every config-like file is read (a config, a search space): with a
size limit, every key once per mapping, and no alias bomb (a few hundred bytes of nested
aliases can name billions of values); each mistake one ``UserError`` line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlp.errors import UserError, first_line
from mlp.files import read_limited, require_file

MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few hundred bytes; a sweep's base config too
MAX_CONFIG_VALUES = 10_000  # values after YAML aliases are expanded; a config has a few dozen


def read_yaml(path: Path) -> dict[str, Any]:
    require_file(path, "config file", "; give a YAML file (e.g. configs/mnist.yaml)")
    try:
        raw = parse_yaml(read_limited(path, MAX_CONFIG_BYTES, "config file", "a config").decode(), str(path))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or first_line(e)
        kind = "" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error: "
        raise UserError(f"{path}:{line}: {kind}{problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config file {path}: {first_line(e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping of sections (data:, model:, ...)")
    return raw


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *base may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key '{key}' is given twice (also on line {seen[key] + 1}); keep one",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark.line
                except TypeError:  # an unhashable key: the loader itself refuses it
                    continue
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """Safe YAML, refused when its aliases would expand it past ``MAX_CONFIG_VALUES`` values.

    Aliases make a few hundred bytes name billions of values; the size is counted on the
    parsed nodes (each shared node once), before anything is built from them.
    """
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_CONFIG_VALUES:
            what = "refers to itself" if size == float("inf") else f"expands to {size:,} values"
            raise UserError(f"{source}: the YAML {what} through its aliases (*name); a config holds a few "
                            f"dozen values and at most {MAX_CONFIG_VALUES:,} are read: refusing it")
        return loader.construct_document(node)
    except RecursionError:
        raise UserError(f"{source}: the YAML is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _expanded_size(node, sizes: dict[int, float], open_nodes: set[int]) -> float:
    """How many values ``node`` stands for once every alias is written out (inf for a cycle)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        return float("inf")
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
                       for k, v in node.value)
    else:
        size = 1
    open_nodes.discard(key)
    sizes[key] = size
    return size
