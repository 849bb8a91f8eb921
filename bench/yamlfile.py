"""Reading YAML config files: ``yaml.safe_load`` with two fixes, and one ``error:`` line per bad file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark):
        super().__init__(f"the key '{key}' twice (lines {first.line + 1} and {again.line + 1})")
        self.key = key


class ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load`` semantics, except: scientific notation without a dot (``1e-4``)
    is a float, not a string (YAML 1.1 requires ``1.0e-4``), and a mapping that names a key
    twice is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], key_node.start_mark)
                seen[key] = key_node.start_mark
            except TypeError:  # unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """One YAML document (a file or a command-line value) read with :class:`ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)


CONFIG_EMPTY_HINT = ("; name a preset such as configs/default.yaml, or write the sections (data:, train:, ...) it "
                     "should set")


def read_yaml(path: str | Path, what: str = "config file", holds: str = "sections (data:, train:, ...)",
              empty_hint: str = CONFIG_EMPTY_HINT) -> dict[str, Any]:
    """The mapping of ``holds`` in the YAML file ``path``; UserError with one line (naming the file as
    ``what``, and adding ``empty_hint`` for an empty file) when there is none."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist")
    try:
        raw = load_yaml(path.read_text())
    except DuplicateKeyError as e:
        raise UserError(f"{what} '{path}' has {e}; keep one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{what} '{path}' is not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} '{path}' is not UTF-8 text") from None
    except RecursionError:
        raise UserError(f"{what} '{path}' nests too deeply to be a config") from None
    except OSError as e:
        raise UserError(f"{what} '{path}' cannot be read ({e.strerror})") from None
    if raw is None:  # no document at all: an empty file, or comments only
        raise UserError(f"{what} '{path}' holds no settings (it is empty or only comments){empty_hint}")
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"the single value {str(raw)[:40]!r}"
        raise UserError(f"{what} '{path}' must hold a mapping of {holds}, not {kind}")
    return raw


