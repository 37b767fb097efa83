"""``--config FILE``: options from a YAML or JSON file, or the settings a ``results.json`` recorded.

A config file is data. It is read with a YAML loader that builds only plain
values and refuses aliases (a recursive structure or an alias bomb such as
"billion laughs" cannot be written without them), within a size and nesting
limit; every value is checked by the flag's own type. A file may not make
segrobust run code: a ``module:callable`` model it names is refused unless the
command line names the model itself or passes ``--trust-config``, and it can
never switch on TorchScript (only ``--allow-torchscript`` on the command line
does). ``hf:CLASS`` and ``hf:PATH`` models run no code of their own and are
allowed. So a shared ``results.json`` replays a run's data, model file or spec,
attacks and sizes, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segrobust.cli.errors import UsageError, check_file, one_line
from segrobust.fileio import read_bytes_limited

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "MAX_YAML_BYTES",
    "NOT_RECORDED",
    "check_trust",
    "file_options",
    "read_config_file",
    "recorded_settings",
]

#: The largest YAML config read (a config is a few lines; YAML parsing is slow per byte).
MAX_YAML_BYTES = 1 * 2**20
#: The largest JSON config or results.json read (a results.json of a large data set is tens of MB).
MAX_JSON_BYTES = 256 * 2**20
#: The deepest nesting of lists and mappings a config may have (options need two levels, --attack-args three).
MAX_DEPTH = 16

# A config file cannot name another one or vouch for itself.
_NOT_IN_CONFIG = {"help", "config", "trust_config"}
#: Not recorded for replay: where a run writes, how it continues and prints, what the command line
#: alone may allow (``--fast`` is recorded expanded).
NOT_RECORDED = {"command", "config", "out", "resume", "fast", "format", "trust_config"}
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _yaml_loader() -> type:
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses aliases (``*name``): no recursion, no exponential expansion."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"aliases (*name) are not allowed in a config file (line {mark.line + 1})")
            return super().compose_node(parent, index)

    return ConfigLoader


def _parse(path: str) -> Any:
    """The file's value: YAML for ``.yaml``/``.yml``, JSON otherwise; one-line errors."""
    yaml_file = Path(path).suffix.lower() in (".yaml", ".yml")
    limit = MAX_YAML_BYTES if yaml_file else MAX_JSON_BYTES
    check_file("--config", path, limit)
    try:
        text = read_bytes_limited(path, "--config", limit).decode("utf-8")
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"--config {path}: cannot read it ({one_line(error)})") from None
    try:
        if yaml_file:
            import yaml

            try:
                return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader without aliases
            except yaml.YAMLError as error:
                raise UsageError(f"--config {path}: not valid YAML ({one_line(error)})") from None
        try:
            return json.loads(text)
        except ValueError as error:
            raise UsageError(f"--config {path}: not valid JSON ({error}); YAML files end in .yaml or .yml") from None
    except RecursionError:
        raise UsageError(f"--config {path}: nested too deeply (at most {MAX_DEPTH} levels)") from None


def _check_depth(value: Any, path: str) -> None:
    """Refuse structures nested deeper than `MAX_DEPTH` (walked without recursion)."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (Mapping, list)):
                if depth + 1 > MAX_DEPTH:
                    raise UsageError(f"--config {path}: nested too deeply (at most {MAX_DEPTH} levels)")
                todo.append((child, depth + 1))


def read_config_file(path: str) -> dict[str, Any]:
    """The options in a YAML/JSON file; a ``results.json`` gives the settings its run recorded."""
    from segrobust.benchmark.results import RESULTS_FORMAT

    data = _parse(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UsageError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    _check_depth(data, path)
    if data.get("format") != RESULTS_FORMAT:
        return dict(data)
    config = data.get("config")
    settings = config.get("cli") if isinstance(config, Mapping) else None
    if not isinstance(settings, Mapping):
        raise UsageError(
            f"--config {path}: this results.json was not written by 'segrobust benchmark' "
            "(it records no command-line settings to replay)"
        )
    return dict(settings)


def _as_text(value: Any) -> str:
    """A config-file value as the command line would spell it (lists comma-separated, objects as JSON)."""
    if isinstance(value, Mapping):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def file_options(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The options of file ``path`` for the sub-command ``parser``, each checked and converted like its flag."""
    actions = {action.dest: action for action in parser._actions if action.dest not in _NOT_IN_CONFIG}
    options = {}
    for key, value in read_config_file(path).items():
        dest = str(key).strip().lstrip("-").replace("-", "_")
        if dest not in actions:
            raise UsageError(
                f"--config {path}: unknown option {key!r} for '{parser.prog}' (see '{parser.prog} --help')"
            )
        action, flag = actions[dest], f"--{dest.replace('_', '-')}"
        if value is None:
            continue  # the flag's default
        if action.nargs == 0:  # an on/off flag
            if not isinstance(value, bool):
                raise UsageError(f"--config {path}: {key}: expected true or false, got {value!r}")
            options[dest] = value
            continue
        try:
            converted = action.type(_as_text(value)) if action.type else _as_text(value)
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"--config {path}: {key} ({flag}): {error}") from None
        if action.choices is not None and converted not in action.choices:
            raise UsageError(
                f"--config {path}: {key}: expected one of {', '.join(map(str, action.choices))}, got {value!r}"
            )
        options[dest] = converted
    return options


def _names_code(model: str) -> bool:
    """Whether ``--model`` text would be imported as Python (``module:callable``), not read as a spec or a file."""
    from segrobust.models import ModelLoadError, parse_model_spec

    if model.startswith("hf:") or not _CALLABLE.fullmatch(model) or Path(model).exists():
        return False  # hf:CLASS builds a transformers class, hf:PATH reads a folder: neither imports code
    try:
        parse_model_spec(model)
    except ModelLoadError:
        return True
    return False


def check_trust(from_file: Mapping[str, Any], given: Mapping[str, Any], path: str) -> None:
    """Refuse what a file may not do on its own: name code to import, or allow TorchScript.

    ``hf:CLASS`` and ``hf:PATH`` models are allowed: the first builds one of
    ``transformers``' own classes, the second reads a local folder without its
    code (``trust_remote_code=False``, weights without pickled code), as a
    checkpoint path would be read.
    """
    model = from_file.get("model")
    if isinstance(model, str) and "model" not in given and _names_code(model) and not given.get("trust_config"):
        raise UsageError(
            f"--config {path}: model {model!r} names Python code to import and call (module:callable); "
            f"a config file or results.json may not run code: give --model {model} on the command line, "
            "or --trust-config if you trust this file"
        )
    if from_file.get("allow_torchscript") and not given.get("allow_torchscript"):
        raise UsageError(
            f"--config {path}: allow_torchscript: a config file or results.json may not allow TorchScript "
            "(a model file that runs its own code); give --allow-torchscript on the command line if you trust the model"
        )


def recorded_settings(options: Mapping[str, Any], **resolved: Any) -> dict[str, Any]:
    """Every setting of this run as JSON values that ``--config`` reads back (``resolved`` replaces some)."""
    settings: dict[str, Any] = {}
    for dest, value in {**options, **resolved}.items():
        if dest in NOT_RECORDED:
            continue
        settings[dest] = list(value) if isinstance(value, tuple) else value
    return settings
