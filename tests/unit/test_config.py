import copy
import dataclasses
import re

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from svalign.config import ConfigError, check_config
from svalign.toy.config import ToyConfig


@pytest.fixture
def schema_path(repo):
    return str(repo / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture
def default_config(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_default_config_is_valid(default_config, schema_path):
    validate(default_config, schema_path)
    check_config(default_config)


def test_schema_defaults_equal_library_defaults(repo):
    """The schema documents the defaults; ToyConfig must use the same ones."""
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["$defs"]["toy_experiment"]["properties"]
    library = {f.name: f.default for f in dataclasses.fields(ToyConfig)}
    assert set(properties) == set(library)
    for name, spec in properties.items():
        expected = library[name]
        assert spec["default"] == (list(expected) if isinstance(expected, tuple) else expected), name


def test_defaults_are_filled_in(schema_path):
    config = {"toy": {"experiments": {"tiny": {"n_features": 4}}}}
    validate(config, schema_path)
    assert config["device"] == "auto"
    assert config["toy"]["experiments"]["tiny"]["steps"] == 3000
    assert config["toy"]["figures"]["seed"] == 0


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("toy", "experiments", "single_pair", "lambdas"), [-1.0], "lambdas"),
        (("toy", "experiments", "single_pair", "sparsities"), [1.0], "sparsities"),
        (("toy", "experiments", "single_pair", "d_head"), 0, "d_head"),
        (("toy", "experiments", "single_pair", "lamda"), [1.0], "lamda"),
        (("device",), "tpu", "device"),
        (("toy", "experiments", "single_pair", "attention_loss"), "kl", "attention_loss"),
    ],
)
def test_bad_value_fails_naming_the_key(default_config, schema_path, path, value, key):
    config = copy.deepcopy(default_config)
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(WorkflowError) as error:
        validate(config, schema_path)
    assert key in str(error.value)


@pytest.mark.parametrize(
    "path",
    [
        ("sad", "threshold"),
        ("svd", "max_recon_error"),
        ("sae", "null_quantile"),
        ("sae", "min_explained_variance"),
        ("report", "confidence"),
    ],
)
def test_nan_fails_naming_its_key(default_config, schema_path, path):
    """`.nan` satisfies every range check of the schema (NaN < x is false); the config check refuses it by name."""
    config = copy.deepcopy(default_config)
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = float("nan")
    validate(config, schema_path)  # the schema alone lets it through
    with pytest.raises(ConfigError, match=rf"config key {re.escape('.'.join(path))}: NaN is not a value"):
        check_config(config)


@pytest.mark.parametrize("key", ["context_len", "batch_size"])
def test_sae_sizes_that_must_fit_in_the_corpus_sample_name_the_key(default_config, key):
    config = copy.deepcopy(default_config)
    config["sae"][key] = config["sae"]["n_tokens"] + 1
    with pytest.raises(ConfigError, match=rf"config key sae\.{key}: .* exceeds sae\.n_tokens"):
        check_config(config)


def test_cross_field_error_names_the_experiment(default_config):
    config = copy.deepcopy(default_config)
    config["toy"]["experiments"]["multi_pair"]["pair_offset"] = 90
    with pytest.raises(ConfigError, match=r"toy\.experiments\.multi_pair: .*pair_offset"):
        check_config(config)


def test_grid_too_large_for_memory_fails_naming_the_experiment(default_config):
    config = copy.deepcopy(default_config)
    config["toy"]["experiments"]["multi_pair"]["seeds"] = list(range(64))
    config["toy"]["experiments"]["multi_pair"]["batch_size"] = 65536
    with pytest.raises(ConfigError, match=r"toy\.experiments\.multi_pair: this grid needs about .* GiB"):
        check_config(config)


def test_dynamics_schema_defaults_equal_library_defaults(repo):
    """The schema documents dynamics.train's defaults; DynamicsConfig must use the same ones."""
    from svalign.dynamics.config import DynamicsConfig

    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["$defs"]["dynamics_train"]["properties"]
    library = {f.name: f.default for f in dataclasses.fields(DynamicsConfig)}
    assert set(properties) == set(library)
    for name, spec in properties.items():
        assert spec["default"] == library[name], name


def test_dynamics_cross_field_checks_name_the_key(default_config):
    config = copy.deepcopy(default_config)
    config["dynamics"] = {"enabled": True, "checkpoints": ["EleutherAI/pythia-160m@step1000"], "prompt_set": "ioi"}
    with pytest.raises(ConfigError, match=r"dynamics\.head"):
        check_config(config)
    config["dynamics"]["prompt_set"] = "repeated"
    with pytest.raises(ConfigError, match=r"dynamics\.prompt_set"):
        check_config(config)
    config["dynamics"] = {"enabled": True, "train": {"max_period": 40, "seq_len": 32}}
    with pytest.raises(ConfigError, match=r"dynamics\.train: .*max_period"):
        check_config(config)
    config["dynamics"] = {"enabled": True, "train": {"seq_len": 64, "max_period": 16}}
    config["svd"] = {"max_offset": 31}
    with pytest.raises(ConfigError, match=r"svd\.max_offset"):
        check_config(config)
