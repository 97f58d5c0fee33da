"""Reading training YAML safely: size-bounded, text only, no Python tags, no alias bombs, one-line errors.

``yaml.safe_load`` already refuses ``!!python/object`` tags, but it happily builds a "billion laughs" document:
aliases share one object, so loading is cheap, yet every later walk (``${VAR}`` expansion, validation, the
config dump written beside the run) expands it exponentially.  So the composed node graph is measured first, with
each alias counted as the full size of what it points at, and refused above :data:`MAX_NODES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from diffir.errors import ConfigError, describe_os_error

#: A training config is a few KB; anything larger is the wrong file (an image, a checkpoint, a generated bomb).
MAX_CONFIG_BYTES = 1 << 20
#: Expanded YAML nodes (every alias counted as its full target); the largest shipped config has a few hundred.
MAX_NODES = 100_000


def read_config_text(path: Path) -> str:
    """The text of a config file, or a one-line ConfigError (too big, binary, not UTF-8, unreadable)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(describe_os_error(exc, path)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // (1 << 20)} MB, too large for a training config; "
                          "-c expects a YAML file such as configs/tiny/sr_x4_s1.yaml")
    try:
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "NUL byte")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file; -c expects a training config such as "
                          "configs/tiny/sr_x4_s1.yaml") from None


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with bounded expansion; errors become ``<where>: ...`` one-line ConfigErrors."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply; a training config is a few levels of sections") from None
    finally:
        loader.dispose()


def _describe(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        return f"YAML tag {tag} is not allowed{at}; a config holds plain values (numbers, strings, lists, mappings)"
    return f"not valid YAML: {problem}{at}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded_size(root: yaml.Node, where: str) -> None:
    """Refuse documents whose alias-expanded size exceeds MAX_NODES, and recursive aliases (iterative walk)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_NODES:
                raise ConfigError(f"{where}: the YAML expands to more than {MAX_NODES} values (aliases nested in "
                                  "aliases?); refused: a training config is small")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(f"{where}: a YAML alias refers to itself (recursive structure); refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
