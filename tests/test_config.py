"""Task configs: profiles, overrides, rejection of unknown keys and wrong types, CLI."""

import dataclasses
import re
from pathlib import Path

import pytest

from pneumo.classification import BinaryConfig
from pneumo.config import ConfigError
from pneumo.runner import TASK_REGISTRY, task_spec

ROOT = Path(__file__).resolve().parent.parent


def test_profile_then_overrides():
    config = BinaryConfig.create("smoke", epochs=7)
    assert config.profile == "smoke"
    assert config.epochs == 7
    assert config.resolution == BinaryConfig.PROFILES["smoke"]["resolution"]


def test_none_means_profile_value():
    assert BinaryConfig.create("cpu", epochs=None).epochs == BinaryConfig.PROFILES["cpu"]["epochs"]
    assert BinaryConfig.create("cpu", dropout=None).dropout == BinaryConfig().dropout  # not in the profile


def test_auto_profile_follows_data_and_hardware(monkeypatch, phantom_root, tmp_path):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("pneumo.data.dataset.PROJECT_ROOT", tmp_path)  # no data/chest_xray there
    # No data anywhere: the tasks run on phantoms, with the small profile made for them.
    assert BinaryConfig.create(None).profile == "smoke"
    # A data folder, given or in $PNEUMO_DATA: the hardware decides.
    assert BinaryConfig.create("auto", data=str(phantom_root)).profile == "cpu"
    monkeypatch.setenv("PNEUMO_DATA", str(phantom_root))
    assert BinaryConfig.create(None).profile == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert BinaryConfig.create(None).profile == "gpu"


def test_unknown_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        BinaryConfig.create("smoke", epoch=3)


@pytest.mark.parametrize(
    "field, value",
    [("epochs", "3"), ("epochs", 2.5), ("augment", 1), ("epochs", True), ("lr", "fast"),
     ("balance", "oversample")],
)
def test_wrong_type_or_value_is_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        BinaryConfig.create("smoke", **{field: value})


def test_unknown_profile_is_rejected():
    with pytest.raises(ConfigError, match="profile must be one of"):
        BinaryConfig.create("laptop")


def test_int_is_accepted_for_float_and_stored_as_float():
    config = BinaryConfig.create("smoke", lr=1)
    assert config.lr == 1.0 and isinstance(config.lr, float)


def test_key_excludes_device_workers_and_force():
    a = BinaryConfig.create("smoke", device="cpu", num_workers=1, force=True, cache="/x", data="/d")
    b = BinaryConfig.create("smoke")
    assert a.key_dict() == b.key_dict()
    assert a.key_dict() != BinaryConfig.create("smoke", seed=1).key_dict()


def test_cli_flags():
    config = BinaryConfig.from_cli(["--profile", "smoke", "--epochs", "30", "--augment", "false",
                                    "--device", "cpu", "--grid-epochs", "2"])
    assert (config.epochs, config.augment, config.device, config.grid_epochs) == (30, False, "cpu", 2)
    with pytest.raises(SystemExit):
        BinaryConfig.from_cli(["--epoch", "3"])


@pytest.mark.parametrize("task", list(TASK_REGISTRY))
def test_parameters_cell_lists_every_field(task):
    """The papermill parameters of every task script are exactly its config's field names."""
    spec = task_spec(task)
    cls = spec.config
    text = spec.script.read_text()
    cell = text.split('# %% tags=["parameters"]')[1].split("# %%")[0]
    names = re.findall(r"^(\w+) = None$", cell, flags=re.M)
    assert names == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("field, value, message", [
    ("epochs", -1, "at least 1"),
    ("batch_size", 0, "at least 1"),
    ("resolution", 7, "at least 8"),
    ("val_fraction", 1.5, r"in \(0, 1\)"),
    ("val_fraction", 0, r"in \(0, 1\)"),  # validation chooses the model: it cannot be empty
    ("lr", float("nan"), "greater than 0"),
    ("dropout", 1.0, r"in \[0, 1\)"),
    ("num_workers", -2, "at least 0"),
])
def test_out_of_range_value_is_rejected_when_built(field, value, message):
    with pytest.raises(ConfigError, match=rf"BinaryConfig\.{field} must be {message}, got {value!r}"):
        BinaryConfig.create("smoke", **{field: value})


def test_every_config_of_every_profile_is_valid():
    for task in TASK_REGISTRY:
        cls = task_spec(task).config
        for profile in ("smoke", "cpu", "gpu"):
            cls.create(profile, device="cpu")


def test_range_is_checked_again_on_replace():
    with pytest.raises(ConfigError, match="epochs"):
        BinaryConfig.create("smoke").replace(epochs=0)


def test_fields_are_checked_together():
    with pytest.raises(ConfigError, match=r"resolution 8 is too small for depth 4.*16 pixels"):
        BinaryConfig.create("cpu", resolution=8)
    from pneumo.anomaly import AnomalyConfig

    with pytest.raises(ConfigError, match="multiple of 2\\*\\*depth = 8"):
        AnomalyConfig.create("smoke", resolution=36)


def test_missing_accelerator_is_rejected_when_built(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device 'cuda' .*CUDA is not available.*--device cpu"):
        BinaryConfig.create("smoke", device="cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        BinaryConfig.create("smoke", device="gpu")
    assert BinaryConfig.create("smoke", device="auto").device == "auto"


def test_cli_help_shows_the_range(capsys):
    with pytest.raises(SystemExit):
        BinaryConfig.from_cli(["--help"])
    assert "at least 1" in capsys.readouterr().out


@pytest.mark.parametrize("task", list(TASK_REGISTRY))
def test_the_common_fields_are_declared_once(task):
    """profile, data, seed, ... come from TaskConfig, first; no task declares them again."""
    from pneumo.config import TaskConfig

    common = {f.name: f for f in dataclasses.fields(TaskConfig)}
    fields = dataclasses.fields(task_spec(task).config)
    assert [f.name for f in fields[:len(common)]] == list(common)
    assert all(f is common[f.name] for f in fields[:len(common)])
