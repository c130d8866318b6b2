import pytest

from mlp.config import load_config, validate_config
from mlp.errors import UserError


def test_defaults_and_classic_config(tmp_path):
    cfg = load_config(None)
    assert (cfg.model.width, cfg.model.depth, cfg.model.activation) == (512, 1, "relu")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 1e-3, 64, 10)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_shipped_configs_are_the_classic_model(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    assert cfg.data.dataset == name
    assert cfg.model.widths == [512] and cfg.model.activation == "relu"
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 0.001, 64, 10)


def test_dotted_overrides_parse_yaml_values(tiny_config):
    cfg = load_config(tiny_config, ["model.width=[128, 64]", "train.grad_clip=1.5", "data.augment=true",
                                    "model.activation={name: leaky_relu, negative_slope: 0.2}", "name=x"])
    assert cfg.model.width == [128, 64] and cfg.model.depth == 2
    assert cfg.train.grad_clip == 1.5 and cfg.data.augment is True and cfg.name == "x"
    assert cfg.model.activation == {"name": "leaky_relu", "negative_slope": 0.2}


def test_parameter_override_on_a_named_activation(tiny_config):
    cfg = load_config(tiny_config, ["model.activation=elu", "model.activation.alpha=0.5"])
    assert cfg.model.activation == {"name": "elu", "alpha": 0.5}


def test_aliases_and_case_are_normalised(tiny_config):
    assert load_config(tiny_config, ["model.activation=Swish"]).model.activation == "silu"
    assert load_config(tiny_config, ["data.dataset=Fashion-MNIST"]).data.dataset == "fashion_mnist"


@pytest.mark.parametrize("overrides,pattern", [
    (["model.widht=3"], r"unknown key 'model.widht'; did you mean 'model.width'\?"),
    (["trian.epochs=3"], r"unknown key 'trian'; did you mean 'train'\?"),
    (["model.width=abc"], r"model.width: .*integer"),
    (["train.epochs=0"], r"train.epochs: .*greater than or equal to 1"),
    (["model.dropout=1.5"], r"model.dropout: .*less than 1"),
    (["model.activation=relux"], r"unknown activation 'relux'; did you mean 'relu'\?"),
    (["model.activation={name: elu, slope: 2}"], r"activation 'elu' has no parameter 'slope' \(it takes alpha\)"),
    (["data.dataset=mnsit"], r"unknown dataset 'mnsit'; did you mean 'mnist'\?"),
    (["optimizer.name=adamm"], r"optimizer.name: .*'adam', 'adamw' or 'sgd'"),
    (["train.device=gpu"], r"train.device: 'gpu' is not a device"),
    (["model.width=[64, 32]", "model.depth=3"], r"model.depth is 3 but model.width lists 2 widths"),
    (["model.width=128=3"], r"model.width"),
    (["modelwidth"], r"--set expects KEY=VALUE"),
    (["train.epochs.x=1"], r"'train.epochs' is a value, not a section"),
])
def test_bad_values_name_the_field_and_the_fix(tiny_config, overrides, pattern):
    with pytest.raises(UserError, match=pattern) as e:
        load_config(tiny_config, overrides)
    assert "\n" not in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  width: [1, 2\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+: YAML syntax error"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_config(bad)


def test_round_trip_through_a_dict():
    cfg = validate_config({"model": {"activation": {"name": "prelu", "per_unit": True}}})
    assert validate_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("overrides,start", [
    (["model.widht=3"], "--set model.widht=3: unknown key 'model.widht'"),
    (["train.epochs=-1"], "--set train.epochs=-1: train.epochs: "),
    (["model.width=[64, true]"], "--set model.width=[64, true]: model.width.1: must be a number"),
    (["model.depth=3"], "{file} with --set model.depth=3: model.depth is 3 but model.width lists 2 widths"),
    (["train.batch_size=8"], "{file}: optimizer.lr: "),  # the mistake is the file's, not the --set's
])
def test_a_mistake_is_blamed_on_where_it_was_made(tmp_path, overrides, start):
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  width: [16, 8]\noptimizer:\n  lr: -1\n" if "batch_size" in overrides[0]
                      else "model:\n  width: [16, 8]\n")
    with pytest.raises(UserError) as e:
        load_config(config, overrides)
    assert str(e.value).startswith(start.format(file=config)), str(e.value)
