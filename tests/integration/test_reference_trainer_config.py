"""The reference trainer's config: `{run_dir}` and `$VAR` fill string values only, bad keys and unset variables
are clear errors naming the key, and `--set` reaches nested keys (in process and from the command line)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from classy_hooks.model import load_checkpoint
from helpers import ROOT, subprocess_env, tiny_config, train_command, write_config
from reference_trainer.config import ConfigError, apply_override, check_keys, load_config, substitute
from reference_trainer.task import ReferenceTask


def test_a_quote_and_a_backslash_in_the_run_dir_stay_part_of_the_path(tmp_path: Path) -> None:
    run_dir = tmp_path / 'run "quoted" \\ dir'
    config = tiny_config(num_epochs=1, hooks=[{"name": "checkpoint", "checkpoint_folder": "{run_dir}/checkpoints"}])
    task = ReferenceTask.from_config(config, run_dir=str(run_dir))
    task.run()
    checkpoint = load_checkpoint(run_dir / "checkpoints")
    assert checkpoint["classy_state_dict"]["phase_idx"] == 0  # the train phase, written where the hook was told


def test_variables_fill_string_values_only_and_keys_stay_as_written() -> None:
    config = {"hooks": [{"name": "visdom", "port": "$PORT", "env": "${ENV_NAME}_x", "note": "{run_dir}/$$"}]}
    out = substitute(config, "/runs/a", {"PORT": "8097", "ENV_NAME": "demo"})
    assert out == {"hooks": [{"name": "visdom", "port": "8097", "env": "demo_x", "note": "/runs/a/$$"}]}
    assert config["hooks"][0]["port"] == "$PORT"  # the input is not changed


def test_an_unset_variable_names_the_key_path_that_uses_it() -> None:
    config = tiny_config(hooks=[{"name": "tensorboard_plot"}, {"name": "visdom", "port": "$NOT_SET_ANYWHERE"}])
    with pytest.raises(ConfigError, match=r"hooks\[1\]\.port = '\$NOT_SET_ANYWHERE' uses \$NOT_SET_ANYWHERE, which is "
                       r"not set; export NOT_SET_ANYWHERE=\.\.\."):
        substitute(config, "/runs/a", {})


def test_an_unknown_key_is_an_error_with_the_close_match() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'num_epoch'\. Did you mean 'num_epochs'\?"):
        ReferenceTask(tiny_config(num_epoch=3))
    with pytest.raises(ConfigError, match=r"unknown config key 'dataset\.batch_sise'\. Did you mean 'batch_size'\?"):
        check_keys({"dataset": {"batch_sise": 8}})
    check_keys({"model": {"name": "small_cnn", "width": 8}, "optimizer": {"name": "adamw", "betas": [0.9, 0.99]}})


def test_set_reaches_nested_keys_and_rejects_a_bad_key_path_or_value() -> None:
    config = tiny_config()
    apply_override(config, "dataset.batch_size=64")
    apply_override(config, 'compile.backend="aot_eager"')  # "compile" is null by default: the section is created
    apply_override(config, "num_epochs=3")
    assert config["dataset"]["batch_size"] == 64 and config["dataset"]["num_classes"] == 4
    assert config["compile"] == {"backend": "aot_eager"} and config["num_epochs"] == 3
    with pytest.raises(ConfigError, match=r"'dataset\.batchsize'\. Did you mean 'batch_size'"):
        apply_override(config, "dataset.batchsize=64")
    with pytest.raises(ConfigError, match=r"num_epochs is 3, not a section"):
        apply_override(config, "num_epochs.x=1")
    with pytest.raises(ConfigError, match=r"--set dataset\.noise: 'abc' is not JSON"):
        apply_override(config, "dataset.noise=abc")
    with pytest.raises(ConfigError, match=r"must be KEY=JSON"):
        apply_override(config, "dataset.noise")


def test_load_config_checks_the_file_then_applies_each_set(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.json", tiny_config())
    assert load_config(str(path), ["dataset.batch_size=8", "optimizer.lr=0.5"])["dataset"]["batch_size"] == 8
    write_config(path, tiny_config(hookz=[]))
    with pytest.raises(ConfigError, match=r"'hookz'\. Did you mean 'hooks'"):
        load_config(str(path))


def test_demo_config_loads_with_its_run_dir_and_visdom_port() -> None:
    config = load_config(str(ROOT / "tools" / "configs" / "demo.json"))
    out = substitute(config, '/runs/"demo"', {"VISDOM_PORT": "8097"})
    by_name = {hook["name"]: hook for hook in out["hooks"]}
    assert by_name["visdom"]["port"] == "8097"
    assert by_name["checkpoint"]["checkpoint_folder"] == '/runs/"demo"/checkpoints'


def _train_cli(tmp_path: Path, config: dict, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = train_command(write_config(tmp_path / "config.json", config), tmp_path / "run", extra=extra)
    return subprocess.run(command, env=env or subprocess_env(), text=True, capture_output=True, timeout=300, cwd=ROOT)


def test_command_line_reports_an_unset_variable_and_writes_nothing(tmp_path: Path) -> None:
    config = tiny_config(hooks=[{"name": "checkpoint", "checkpoint_folder": "$NO_SUCH_FOLDER_VAR/ckpt"}])
    env = subprocess_env()
    env.pop("NO_SUCH_FOLDER_VAR", None)
    proc = _train_cli(tmp_path, config, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "hooks[0].checkpoint_folder = '$NO_SUCH_FOLDER_VAR/ckpt' uses $NO_SUCH_FOLDER_VAR" in proc.stdout
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_command_line_nested_set_changes_the_trained_config(tmp_path: Path) -> None:
    config = tiny_config(hooks=[{"name": "checkpoint", "checkpoint_folder": "{run_dir}/checkpoints"}])
    proc = _train_cli(tmp_path, config, "--set", "dataset.batch_size=32", "--set", "num_epochs=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "run" / "checkpoints")["classy_state_dict"]
    assert state["phase_idx"] == 0 and state["num_updates"] == 128  # the one train phase (of 128 samples)
    assert len(state["losses"]) == 128 // 32  # with batch 32: 4 batches, not tiny_config's 8
    bad = _train_cli(tmp_path, config, "--set", "dataset.batch_sze=32")
    assert bad.returncode == 2 and "Did you mean 'batch_size'" in bad.stdout
