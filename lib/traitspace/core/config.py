"""The one parameter schema shared by every notebook and the runner.

A params file (YAML) is validated here before any model loads: an unknown key, a wrong type or a
missing file is rejected with a message that names the file and the dotted key at fault.
Notebooks receive only the path of a params file (plus optional overrides) as their papermill
parameters and call :func:`load_config`, so the schema lives in exactly one place.

The schema checks shape only. Names that must exist elsewhere (trait names and counts in the trait
library, fine-tuning datasets in the registry) are checked by
:func:`traitspace.library.references.check_references`, which :func:`load_config` calls after
validation; the schema itself imports neither.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError, model_validator

from . import paths
from .io import DataFileError, load_yaml
from .sections import (  # noqa: F401  (re-exported: the sections are part of the config API)
    ConfigError,
    _Section,
    RunSection,
    source_is_path,
    looks_like_file,
    ModelSection,
    CaptureSection,
    ModelCheckSection,
    LiveMonitorSection,
    FinetuneSection,
    ProjectSection,
    ExtractSection,
    BehaviorSection,
    FindingsSection,
)
from .experiment_sections import (  # noqa: F401  (re-exported likewise)
    SteerSection,
    RealignSection,
    SaeSection,
    ConsistencySection,
)


class RunConfig(_Section):
    run: RunSection = RunSection()
    model: ModelSection = ModelSection()
    capture: CaptureSection = CaptureSection()
    model_check: ModelCheckSection = ModelCheckSection()
    extract: ExtractSection = ExtractSection()
    finetune: FinetuneSection = FinetuneSection()
    project: ProjectSection = ProjectSection()
    findings: FindingsSection = FindingsSection()
    behavior: BehaviorSection = BehaviorSection()
    steer: SteerSection = SteerSection()
    realign: RealignSection = RealignSection()
    sae: SaeSection = SaeSection()
    consistency: ConsistencySection = ConsistencySection()

    # Filled in by load_config; not part of the params file.
    params_path: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _sampled_seeds_are_trained(self) -> RunConfig:
        extra = sorted(set(self.behavior.sample_seeds or []) - set(self.finetune.seeds))
        if extra:
            raise ValueError(f"behavior.sample_seeds {extra} are not in finetune.seeds {list(self.finetune.seeds)}")
        return self

    @property
    def run_name(self) -> str:
        if self.run.name:
            return self.run.name
        return Path(self.params_path).stem if self.params_path else "run"

    @property
    def run_dir(self) -> Path:
        """``<output_root>/<run name>``, absolute: a relative output_root is taken from the project root."""
        return paths.resolve(self.run.output_root) / self.run_name

    def resolved(self) -> dict[str, Any]:
        """The full parameter set with defaults filled in, as JSON-compatible data."""
        data = self.model_dump(mode="json")
        data["run"]["name"] = self.run_name
        return data

    def params_hash(self, *sections: str) -> str:
        """Short sha256 of the resolved params, or of only the named sections (for stage caches)."""
        data = self.resolved()
        if sections:
            data = {name: data[name] for name in sections}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _format_validation_error(path: str, error: ValidationError) -> str:
    lines = [f"{path}: invalid parameters"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply {"section.key": value} overrides (dotted keys) onto the parsed YAML."""
    for dotted, value in overrides.items():
        target = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        target[leaf] = value
    return data


def _resolve_data_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Make the data-file paths of the parsed YAML absolute against the project root, before the
    sections check that the files exist. Built-in names (datasets, ``tiny:llama``) stay as they are."""
    def at(*keys: str) -> dict[str, Any]:
        found: Any = data
        for key in keys:
            found = found.get(key) if isinstance(found, dict) else None
        return found if isinstance(found, dict) else {}  # a malformed section is the schema's to report

    def resolve_key(mapping: dict[str, Any], key: str, applies=lambda value: True) -> None:
        value = mapping.get(key)
        if isinstance(value, str) and applies(value):
            mapping[key] = str(paths.resolve(value))
        elif isinstance(value, list):
            mapping[key] = [str(paths.resolve(item)) if isinstance(item, str) else item for item in value]

    resolve_key(at("model"), "source", source_is_path)
    resolve_key(at("extract"), "library", lambda library: library != "builtin")
    conditions = at("finetune").get("conditions")
    if isinstance(conditions, dict):  # a list holds dataset names only (they become folder names)
        for name in conditions:
            resolve_key(conditions, name, looks_like_file)
    for key in ("fingerprint_file", "monitor_file"):
        resolve_key(at("finetune", "live_monitor"), key)
    for key in ("question_files", "preference_pairs_file"):
        resolve_key(at("behavior"), key)
    resolve_key(at("behavior", "judge"), "model", source_is_path)
    resolve_key(at("findings"), "extra_runs")
    resolve_key(at("sae"), "published")
    resolve_key(at("consistency"), "self_knowledge_file")
    return data


def _merge_sections(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` over ``base``: mappings merge key by key, any other value (lists included) replaces."""
    merged = dict(base)
    for key, value in own.items():
        merged[key] = (_merge_sections(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
                       else value)
    return merged


def _read_params_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The parsed YAML of a params file, with ``extends: other.yaml`` (relative to this file) applied:
    the other file's params with this file's merged over them, so a preset states only how it differs.
    ``run.name`` is never inherited: a run is named by its own file."""
    try:
        data = load_yaml(path) or {}
    except DataFileError as error:  # "<file>:<line>: invalid YAML: ..."
        raise ConfigError(str(error)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected the path of another params file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in (*chain, path.resolve()):
        raise ConfigError(f"{path}: extends: {base} extends itself (chain: {[str(p) for p in (*chain, path)]})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends: params file not found: {base} (looked for {base_path})")
    inherited = _read_params_file(base_path, (*chain, path.resolve()))
    if isinstance(inherited.get("run"), dict):
        inherited["run"] = {key: value for key, value in inherited["run"].items() if key != "name"}
    return _merge_sections(inherited, data)


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read and validate a params file. Raises ConfigError naming the file and the key.

    Relative paths (the params file itself, data files in it, ``run.output_root``) are taken from the
    project root, not the working directory (:mod:`traitspace.core.paths`)."""
    given, path = str(path), str(paths.resolve(path))
    if not Path(path).is_file():
        raise ConfigError(f"params file not found: {given} (looked for {path}; relative paths start at the "
                          f"project root {paths.project_root()})")
    data = _read_params_file(Path(path))
    data = _resolve_data_paths(_apply_overrides(data, overrides or {}))
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(path, error)) from None
    config = config.model_copy(update={"params_path": path})
    # Imported here: the library and the dataset registry sit above this module (they import it).
    from ..library.references import check_references

    check_references(config)
    return config
