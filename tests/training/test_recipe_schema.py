"""The training config is one typed schema: every bad field is a ConfigError naming it and the fix;
bad data is found before the first step, and nothing is written to the run folder before that."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_trainer import write_config, write_data

from cheers.config import CheersConfig
from cheers.errors import ConfigError, DataError
from cheers.training.recipe import StageConfig, TrainConfig
from parity_fixtures import OFFICIAL

BASE = {
    "model": {"preset": "tiny", "tokenizer": "tok"},
    "data": {"files": ["train.jsonl"]},
    "stages": [{"name": "align", "steps": 3}],
    "run": {},
}


def _with(section: str, key: str, value) -> dict:
    raw = copy.deepcopy(BASE)
    (raw["stages"][0] if section == "stages" else raw[section])[key] = value
    return raw


# (section, key, bad value, expected fragment of the message: field = value: problem; fix)
BAD = [
    ("stages", "steps", "three", r"stages\[0\]\.steps = 'three': must be an integer, got a string"),
    ("stages", "steps", 3.5, r"stages\[0\]\.steps = 3\.5: must be an integer"),
    ("stages", "steps", 3.0, r"steps = 3\.0: must be an integer; write it without a decimal point"),
    ("stages", "steps", 0, r"stages\[0\]\.steps = 0: must be ≥ 1; write e\.g\. steps = 1000"),
    ("stages", "steps", True, r"steps = True: must be an integer, got a boolean"),
    ("stages", "lr", "1e-4", r"lr = '1e-4': must be a number, got a string \(remove the quotes\)"),
    ("stages", "lr", -1e-4, r"stages\[0\]\.lr = -0\.0001: must be > 0; write e\.g\. lr = 1e-4"),
    ("stages", "lr", float("nan"), r"lr = nan: must be a finite number"),
    ("stages", "lr", float("inf"), r"lr = inf: must be a finite number"),
    ("stages", "betas", [0.9], r"betas = \[0\.9\]: must be two numbers .*betas = \[0\.9, 0\.95\]"),
    ("stages", "betas", [0.9, 1.5], r"each beta must be in \[0, 1\)"),
    ("stages", "betas", "0.9,0.95", r"betas = '0\.9,0\.95': must be two numbers"),
    ("stages", "warmup", 1.0, r"warmup = 1\.0: must be a fraction in \[0, 1\)"),
    ("stages", "guidance_dropout", 1.5, r"guidance_dropout = 1\.5: must be in \[0, 1\]"),
    ("stages", "time_shift", 0, r"time_shift = 0: must be > 0"),
    ("stages", "time_shift", -1.0, r"time_shift = -1\.0: must be > 0"),
    ("stages", "batch_size", 0, r"batch_size = 0: must be ≥ 1"),
    ("stages", "image_loss_weight", -1, r"image_loss_weight = -1: must be ≥ 0"),
    ("stages", "data_weights", 1.0, r"data_weights = 1\.0: must be a list of numbers"),
    ("stages", "data_weights", [1, "x"], r"must be a list of numbers, one per \[data\] file"),
    ("stages", "data_weights", [0, 0], r"data_weights = \[0, 0\]: each weight must be ≥ 0 and"),
    ("stages", "clip", 0.0, r"clip = 0\.0: must be > 0"),
    ("stages", "schedule", "cosin", r"schedule = 'cosin': .*did you mean 'cosine'\?"),
    ("stages", "kind", 3, r"kind = 3: must be a string"),
    ("stages", "trainable", [], r"trainable = \[\]: must be a preset"),
    ("stages", "trainable", "nw", r"trainable = 'nw' is not a preset"),
    ("stages", "name", "", r"stages\[0\]\.name = '': must be a non-empty name"),
    ("run", "seed", 123456789012345678901234567890, r"run\.seed = 1234.*: must be in \[0, 2³²\)"),
    ("run", "seed", -1, r"run\.seed = -1: must be in"),
    ("run", "save_every", 0, r"run\.save_every = 0: must be ≥ 1"),
    ("run", "progress", "yes", r"run\.progress = 'yes': must be true or false"),
    ("run", "device", "gpu", r"run\.device = 'gpu': must be a torch device"),
    ("run", "strategy", "fdsp", r"run\.strategy = 'fdsp': .*did you mean 'fsdp'\?"),
    ("run", "output_dir", 3, r"run\.output_dir = 3: must be a string"),
    ("data", "max_length", "2048", r"data\.max_length = '2048': must be an integer"),
    ("data", "bad_samples", "skipp", r"data\.bad_samples = 'skipp': .*did you mean 'skip'\?"),
    ("model", "preset", "huge", r"model\.preset = 'huge': must be 'official' or 'tiny'"),
    ("model", "from_pretrained", 3, r"model\.from_pretrained = 3: must be a string"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD, ids=[b[1] for b in BAD])
def test_every_bad_field_names_field_problem_and_fix(tmp_path, section, key, value, message):
    raw = _with(section, key, value)
    if section == "model" and key == "from_pretrained":
        del raw["model"]["preset"]
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_dict(raw, base=tmp_path)
    assert "write" in str(err.value) or "preset" in str(err.value)  # a fix is offered


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [
        ("stages", "stpes", "steps"),
        ("stages", "learning_rate", None),
        ("run", "keep_lst", "keep_last"),
        ("data", "bad_sample", "bad_samples"),
        ("model", "tokeniser", "tokenizer"),
    ],
)
def test_unknown_keys_are_rejected_with_did_you_mean(tmp_path, section, key, suggestion):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'") as err:
        TrainConfig.from_dict(_with(section, key, 1), base=tmp_path)
    if suggestion:
        assert f"did you mean '{suggestion}'?" in str(err.value)
    else:
        assert "did you mean" not in str(err.value)


def test_unknown_section_and_missing_required_field(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["stage"] = [{"name": "x", "steps": 1}]
    with pytest.raises(ConfigError, match="unknown key 'stage'; did you mean 'stages'"):
        TrainConfig.from_dict(raw, base=tmp_path)
    raw = copy.deepcopy(BASE)
    del raw["stages"][0]["steps"]
    with pytest.raises(ConfigError, match=r"stages\[0\] lacks steps.*steps = 1000"):
        TrainConfig.from_dict(raw, base=tmp_path)
    raw = copy.deepcopy(BASE)
    raw["stages"] = {"name": "x"}
    with pytest.raises(ConfigError, match="stages is a table, not a list"):
        TrainConfig.from_dict(raw, base=tmp_path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "a.jsonl", "weight": "2"}, r"data\.files\[0\]\.weight = '2'"),
        ({"path": "a.jsonl", "weight": -1}, r"data\.files\[0\]\.weight = -1"),
        ({"path": 3}, r"data\.files\[0\]\.path = 3"),
        ({"path": "a.jsonl", "wieght": 2}, "did you mean 'weight'"),
        (5, r"data\.files\[0\] = 5: each entry needs a path"),
    ],
)
def test_data_file_entries_are_checked(tmp_path, entry, message):
    raw = copy.deepcopy(BASE)
    raw["data"]["files"] = [entry]
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(raw, base=tmp_path)


def test_good_values_are_normalised(tmp_path):
    raw = _with("stages", "betas", [0.8, 0.9])
    raw["stages"][0]["lr"] = 1  # an integer is a number
    raw["stages"][0]["data_weights"] = [1, 0.5]
    stage = TrainConfig.from_dict(raw, base=tmp_path).stages[0]
    assert stage.betas == (0.8, 0.9) and isinstance(stage.lr, float) and stage.lr == 1.0
    assert stage.data_weights == (1.0, 0.5) and stage.image_loss_weight == 1.0


def test_a_config_built_in_python_is_checked_the_same_way(tmp_path):
    config = TrainConfig.from_dict(copy.deepcopy(BASE), base=tmp_path)
    config.stages.append(StageConfig(name="more", steps="5"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"stages\[1\]\.steps = '5': must be an integer"):
        config.validate()


def test_toml_errors_name_the_file(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(
        '[model]\npreset = "tiny"\ntokenizer = "t"\n[[stages]]\nname = "a"\nsteps = "three"\n'
    )
    with pytest.raises(ConfigError, match=rf"{path}: .*steps = 'three'"):
        TrainConfig.from_toml(path)
    path.write_bytes(b"\xff\xfe not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        TrainConfig.from_toml(path)


# -- the model config.json ----------------------------------------------------------------------


def test_a_typo_in_model_config_json_is_reported():
    released = json.loads((OFFICIAL / "config.json").read_text())
    assert CheersConfig.from_dict(copy.deepcopy(released)).text_config.num_hidden_layers == 28
    bad = copy.deepcopy(released)
    bad["text_config"]["num_hidden_layer"] = 4
    with pytest.raises(ConfigError, match="did you mean 'num_hidden_layers'"):
        CheersConfig.from_dict(bad)
    bad = copy.deepcopy(released)
    bad["detail_head_layer"] = 1
    with pytest.raises(ConfigError, match="did you mean 'detail_head_layers'"):
        CheersConfig.from_dict(bad)
    # Hugging Face bookkeeping keys unrelated to any field still load.
    extra = copy.deepcopy(released)
    extra["text_config"]["bos_token_id"] = 151643
    extra["_name_or_path"] = "ai9stars/Cheers"
    assert CheersConfig.from_dict(extra).text_config.num_hidden_layers == 28


# -- data checked before the first step; nothing written before ---------------------------------


def _setup(tmp_path: Path, **run) -> tuple[Path, Path]:
    data = write_data(tmp_path / "data")
    return data, write_config(data, "run", vae_steps=1, joint_steps=1, **run)


def test_a_bad_field_leaves_no_run_folder(tmp_path):
    data, config = _setup(tmp_path)
    config.write_text(config.read_text().replace("steps = 1\nlr = 2e-3", "steps = 1\nlr = -2e-3"))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.lr = -0\.002: must be > 0"):
        TrainConfig.from_toml(config)
    assert not (data / "run").exists()


def test_a_corrupt_image_fails_before_training_and_writes_nothing(tmp_path):
    from cheers.training.trainer import Trainer

    data, config = _setup(tmp_path)
    (data / "blue_square.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"train\.jsonl:\d+: image .*blue_square\.png.*'skip'"):
        Trainer(TrainConfig.from_toml(config))
    assert not (data / "run").exists()


def test_skip_counts_and_reports_samples_with_bad_images(tmp_path, capsys):
    from cheers.training.trainer import Trainer

    data, config = _setup(tmp_path)
    config.write_text(
        config.read_text().replace("group_window = 1", 'bad_samples = "skip"\ngroup_window = 1')
    )
    (data / "blue_square.png").write_bytes(b"not an image")
    trainer = Trainer(TrainConfig.from_toml(config))
    # blue_square.png is in three of the six samples: the question, the caption and the edit.
    assert len(trainer.data) == 3
    assert trainer.data.report.skipped["unreadable image"] == [
        f"{data / 'train.jsonl'}:{n}" for n in (2, 4, 5)
    ]
    assert "3 sample(s) skipped" in capsys.readouterr().out
    assert not (data / "run").exists()


def test_output_dir_that_is_a_file_fails_up_front(tmp_path):
    from cheers.training.trainer import Trainer

    data, config = _setup(tmp_path)
    (data / "run").write_text("a file")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        Trainer(TrainConfig.from_toml(config))


def test_data_weights_must_give_one_weight_per_data_file(tmp_path):
    from cheers.training.trainer import Trainer

    data, config = _setup(tmp_path)
    text = config.read_text().replace('name = "joint"', 'name = "joint"\ndata_weights = [1.0, 0.0]')
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"'joint'.* 2 data_weights for 1 \[data\] files"):
        Trainer(TrainConfig.from_toml(config))
    assert not (data / "run").exists()
