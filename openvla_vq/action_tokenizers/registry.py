"""One registry: tokenizer *names* -> config files in the repo's `tokenizers/`, tokenizer *types* -> classes.

A registered name is a JSON file `tokenizers/<name>.json`:

    {"description": "...",
     "tokenizer": {"type": "vq", ...config fields...},   # architecture; enough to build an untrained one
     "weights": "vq_o+l+m",                               # optional: folder tokenizers/<weights>/ to load
     "how_to_get": "...",                                 # optional: shown when the weights are absent
     "data": {...}}                                       # optional: what it is trained on

A type is a class registered here (built-ins: "binning", "vq", "fast", "beast") or a "package.module:Class" import path,
so a new tokenizer is one module plus one config file. `OPENVLA_VQ_TOKENIZERS` may point the registry at
another folder of config files.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
from pathlib import Path
from typing import Any

from openvla_vq.action_tokenizers.base import ActionTokenizer, ActionTokenizerError, config_from_dict, read_saved
from openvla_vq.action_tokenizers.beast import BeastActionTokenizer
from openvla_vq.action_tokenizers.binning import BinningActionTokenizer
from openvla_vq.action_tokenizers.fast import FastActionTokenizer
from openvla_vq.action_tokenizers.vq import VQActionTokenizer

TOKENIZER_TYPES: dict[str, type[ActionTokenizer]] = {
    cls.type_name: cls for cls in (BinningActionTokenizer, VQActionTokenizer, FastActionTokenizer, BeastActionTokenizer)
}


class UnknownTokenizerError(ActionTokenizerError):
    pass


class TokenizerWeightsNotFoundError(ActionTokenizerError):
    pass


def register_tokenizer_type(cls: type[ActionTokenizer]) -> type[ActionTokenizer]:
    """Class decorator: make `cls` loadable by its `type_name` from configs and saved folders."""
    TOKENIZER_TYPES[cls.type_name] = cls
    return cls


def tokenizer_type(type_name: str) -> type[ActionTokenizer]:
    if type_name in TOKENIZER_TYPES:
        return TOKENIZER_TYPES[type_name]
    if ":" in type_name:
        module, _, attr = type_name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ActionTokenizerError(f"tokenizer type {type_name!r} could not be imported ({e})") from None
    raise ActionTokenizerError(f"unknown tokenizer type {type_name!r}; known types are {sorted(TOKENIZER_TYPES)} or 'module:Class'")


def tokenizers_dir() -> Path:
    """The folder of registered tokenizer configs (repo-root `tokenizers/` unless OPENVLA_VQ_TOKENIZERS is set)."""
    env = os.environ.get("OPENVLA_VQ_TOKENIZERS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "tokenizers"


def registered_names() -> list[str]:
    """Names of the config files that define a tokenizer (tokenizers/mixtures.json, for one, does not)."""
    names = []
    for path in sorted(tokenizers_dir().glob("*.json")):
        try:
            if "tokenizer" in json.loads(path.read_text()):
                names.append(path.stem)
        except json.JSONDecodeError:
            names.append(path.stem)  # loading it names the broken file
    return names


def registry_entry(name: str) -> dict[str, Any]:
    path = tokenizers_dir() / f"{name}.json"
    if not path.is_file():
        known = registered_names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTokenizerError(f"unknown action tokenizer {name!r}{hint} known names: {known} (or pass a saved tokenizer folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ActionTokenizerError(f"{path}: not valid JSON ({e})") from None


def build_action_tokenizer(config: dict[str, Any], name: str | None = None) -> ActionTokenizer:
    """Construct a tokenizer (untrained, for VQ) from a {"type": ..., **fields} dict."""
    config = dict(config)
    cls = tokenizer_type(config.pop("type", ""))
    return cls(config_from_dict(cls.config_class, config, what=name or cls.type_name), name)


def load_tokenizer_folder(folder: str | os.PathLike, name: str | None = None) -> ActionTokenizer:
    """Load a folder written by `ActionTokenizer.save` (config.json + model.safetensors)."""
    folder = Path(folder)
    meta, tensors = read_saved(folder)
    cls = tokenizer_type(meta["type"])
    config = config_from_dict(cls.config_class, meta["config"], what=str(folder / "config.json"))
    return cls.from_saved(config, tensors, name or meta.get("name"))


def weights_folder(entry: dict[str, Any]) -> Path:
    return tokenizers_dir() / entry["weights"]


def load_action_tokenizer(name_or_path: str | os.PathLike) -> ActionTokenizer:
    """The public entry point: a registered name (e.g. "binning", "vq_o+l+m") or a saved tokenizer folder."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_tokenizer_folder(path)
    if os.sep in text or text.startswith("."):
        raise ActionTokenizerError(f"no saved action tokenizer at {path} (expected a folder with config.json and model.safetensors)")
    entry = registry_entry(text)
    if "weights" not in entry:
        return build_action_tokenizer(entry["tokenizer"], name=text)
    folder = weights_folder(entry)
    if not (folder / "config.json").is_file():
        how = entry.get("how_to_get", "train it with tokenizers/train.py")
        raise TokenizerWeightsNotFoundError(
            f"weights of action tokenizer {text!r} not found: looked for {folder}/config.json; {how}; "
            "or pass --tokenizer /path/to/a/saved/tokenizer/folder"
        )
    return load_tokenizer_folder(folder, name=text)
