from pathlib import Path

import pytest

from traitspace.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_params_files_validate():
    for path in sorted((REPO / "params").glob("*.yaml")):
        config = load_config(path)
        assert config.run_name


def test_defaults_and_run_dir(tmp_path):
    config = load_config(write(tmp_path, "model:\n  source: tiny:llama\n", name="myrun.yaml"))
    assert config.run_name == "myrun"
    assert config.run_dir == REPO / "outputs" / "myrun"  # relative output_root: from the project root
    assert config.model.trust_remote_code is False


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "model:\n  sourse: tiny:llama\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "model.sourse" in str(error.value) and "unknown key" in str(error.value)
    assert str(path) in str(error.value)


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"capture\.batch_size"):
        load_config(write(tmp_path, "capture:\n  batch_size: many\n"))


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.source.*not found"):
        load_config(write(tmp_path, "model:\n  source: ./no/such/model.gguf\n"))


def test_missing_params_file():
    with pytest.raises(ConfigError, match="params file not found"):
        load_config("params/does_not_exist.yaml")


def test_yaml_syntax_error_has_line(tmp_path):
    with pytest.raises(ConfigError, match=r"p\.yaml:2"):
        load_config(write(tmp_path, "model:\n  source: [unclosed\n"))


def test_overrides_and_hash(tmp_path):
    path = write(tmp_path, "model:\n  source: tiny:llama\n")
    base = load_config(path)
    changed = load_config(path, {"capture.batch_size": 3})
    assert changed.capture.batch_size == 3
    assert base.params_hash() != changed.params_hash()
    assert base.params_hash("model") == changed.params_hash("model")


def test_unknown_names_are_rejected_with_file_and_key(tmp_path):
    path = write(tmp_path, "extract:\n  traits: [curious, curiuos]\nfinetune:\n  conditions: [insecure_code, no_such_data]\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: invalid parameters")
    assert "extract.traits: unknown trait names: 'curiuos' (close: curious" in message
    assert "finetune.conditions: no_such_data: 'no_such_data' is neither a built-in dataset" in message
    with pytest.raises(ConfigError, match=r"extract\.n_roles: only \d+ roles exist"):
        load_config(write(tmp_path, "extract:\n  n_roles: 100000\n"))


def test_config_schema_does_not_import_the_library():
    # The schema checks shape only; names are resolved by traitspace.library.references.
    import subprocess
    import sys

    code = "import sys, traitspace.core.config; print('traitspace.library' in sys.modules, 'traitspace.em_data' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_middle_layer_is_one_rule():
    import pandas as pd

    from traitspace.core.hooks import resolve_layers
    from traitspace.core.traits import middle_layer, select_layer

    for num_layers in (1, 7, 30):
        assert resolve_layers("middle", num_layers) == [middle_layer(num_layers)] == [num_layers // 2]
        assert select_layer(pd.DataFrame(), "middle", num_layers) == middle_layer(num_layers)


def test_sampled_seeds_must_be_trained_seeds(tmp_path):
    body = "finetune:\n  seeds: [0, 1, 2]\nbehavior:\n  sample_seeds: [{}]\n"
    assert load_config(write(tmp_path, body.format("0, 2"))).behavior.sample_seeds == [0, 2]
    with pytest.raises(ConfigError, match=r"behavior\.sample_seeds \[5\] are not in finetune\.seeds \[0, 1, 2\]"):
        load_config(write(tmp_path, body.format("0, 5")))
