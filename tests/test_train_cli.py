"""`mediatok train` from the command line: a resume reads the run's own config, changes only
what may change between sessions, needs a run and says when it is finished; the progress lines
and the closing line without a terminal; a `--help` that imports no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mediatok.checkpoint import read_checkpoint
from mediatok.cli import main
from mediatok.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "image" / "titok-tiny.yaml"  # 4 steps, eval at step 4
ASSETS = ROOT / "assets" / "images"
QUIET = ["train.tensorboard=false", "train.eval_every=0"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Four of the shipped photos in a folder of the user's own."""
    folder = tmp_path / "my-photos"
    folder.mkdir()
    for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png"):
        shutil.copy(ASSETS / name, folder / name)
    return folder


def train(*args: str) -> int:
    return main(["train", *map(str, args)])


def test_resume_trains_the_runs_own_config(tmp_path, photos, monkeypatch):
    # The README's resume example names the YAML and train.out_dir only. The config came from
    # the command line: the YAML's data.train_dir (assets/images) does not exist here, and
    # where it did, the run went on with other data after a warning.
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert train(TINY_CONFIG, f"data.train_dir={photos}", f"train.out_dir={run}", *QUIET) == 0
    assert train(TINY_CONFIG, f"train.out_dir={run}", "train.steps=6", "--resume") == 0
    saved = read_checkpoint(run / "checkpoint")
    assert saved.step == 6 and saved.run["data"]["train_dir"] == str(photos)
    assert saved.run["train"]["tensorboard"] is False and saved.run["train"]["eval_every"] == 0
    # The run's folder alone says what to resume.
    assert train(run, "train.steps=7", "--resume") == 0
    assert read_checkpoint(run / "checkpoint").step == 7
    with pytest.raises(ValueError, match="got a folder; add --resume"):
        train(run)


def test_resume_refuses_changes_beyond_the_session_settings(tmp_path, photos):
    run = tmp_path / "run"
    common = [f"train.out_dir={run}", *QUIET]
    assert train(TINY_CONFIG, f"data.train_dir={photos}", *common, "train.steps=2") == 0
    changed = [TINY_CONFIG, *common, "train.steps=3", "data.repeat=2", "--resume"]
    with pytest.raises(ValueError, match=r"data.repeat: saved 4, now 2.*--allow-changes"):
        train(*changed)
    with pytest.raises(ConfigError, match="task=audio_codec"):  # another task: never
        train(run, "train.steps=3", "task=audio_codec", "--resume")
    assert read_checkpoint(run / "checkpoint").step == 2  # nothing trained
    assert train(*changed, "--allow-changes") == 0
    saved = read_checkpoint(run / "checkpoint")
    assert saved.step == 3 and saved.run["data"]["repeat"] == 2


def test_resume_needs_a_run_and_says_when_it_is_finished(tmp_path, photos, capsys):
    # A resume into a folder without a checkpoint started a new run; a finished run resumed
    # trained the YAML's steps, or said nothing.
    empty = tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match=f"{empty}: expected a run to resume.*not exist"):
        train(TINY_CONFIG, f"train.out_dir={empty}", "--resume")
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint; leave out --resume"):
        train(TINY_CONFIG, f"train.out_dir={empty}", "--resume")
    assert list(empty.iterdir()) == []

    run = tmp_path / "run"
    first = [f"data.train_dir={photos}", f"train.out_dir={run}", "train.steps=2", *QUIET]
    assert train(TINY_CONFIG, *first) == 0
    capsys.readouterr()
    assert train(TINY_CONFIG, f"train.out_dir={run}", "--resume") == 0
    said = capsys.readouterr().err
    assert said.startswith(f"mediatok train: {run} is finished: its checkpoint is at step 2 of")
    assert "train.steps=4" in said
    assert read_checkpoint(run / "checkpoint").step == 2


def test_without_a_terminal_train_logs_a_line_per_interval_and_a_closing_line(
    tmp_path, photos, capsys
):
    # Under a scheduler (stderr a file) a two-minute run left an empty log: the progress bar
    # draws only on a terminal.
    run = tmp_path / "run"
    args = [f"data.train_dir={photos}", f"train.out_dir={run}", "train.log_every=2", *QUIET]
    assert train(TINY_CONFIG, *args) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "train/loss=" in line]
    assert [line.split(":")[1].strip() for line in lines] == ["step 2", "step 4"]
    assert all(line.startswith("mediatok train: step ") for line in lines)
    loss = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    expected = f"trained to step 4 of 4, train/loss {loss['train/loss']:.4g}; checkpoint: "
    assert out.strip() == expected + str(run / "checkpoint")


def test_help_imports_neither_torch_nor_the_training_code():
    # `mediatok --help` took 3.5-5 s: the package imported torch and every codec.
    script = (
        "import sys\n"
        "from mediatok.cli import main\n"
        "for argv in (['--help'], ['train', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in sys.modules if m == 'torch' or m.startswith('mediatok.training')]\n"
        "print('imported:', sorted(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--allow-changes" in done.stdout  # the help was printed
    assert done.stdout.splitlines()[-1] == "imported: []"


def test_the_package_names_load_on_first_use():
    script = (
        "import sys, mediatok\n"
        "assert 'torch' not in sys.modules\n"
        "from mediatok import load, TokenSpec\n"
        "import mediatok.api\n"
        "assert load is mediatok.api.load and mediatok.sample is mediatok.api.sample\n"
        "assert set(mediatok.__all__) <= set(dir(mediatok))\n"
        "print(all(getattr(mediatok, name) is not None for name in mediatok.__all__))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    import mediatok

    with pytest.raises(AttributeError, match="no attribute 'loads'"):
        mediatok.loads  # noqa: B018


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_commands_let_waiting_openmp_threads_sleep_unless_told(given, expected, tmp_path):
    # Spinning OpenMP threads made a training step 2x slower, the demo's quantizers 1.5-10x,
    # beside another CPU-bound process on two cores. The user's own setting wins.
    import os

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    script = (
        "import os, sys\n"
        "from mediatok.cli import main\n"
        f"main(['train', {str(tmp_path / 'missing.yaml')!r}])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    env["MEDIATOK_TRACEBACK"] = ""  # the missing file: one line and status 2, not a traceback
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "missing.yaml" in done.stderr, done.stderr
    assert done.stdout.split() == [expected, "True"]


def test_overrides_may_follow_resume_and_nothing_else_may_stray(tmp_path, capsys):
    """`mediatok train runs/x --resume train.steps=N` (the README's order) reads the override;
    a stray argument of another command is still an error naming it."""
    from mediatok.cli import build_parser, main

    parser = build_parser()
    args, extra = parser.parse_known_args(["train", "runs/x", "--resume", "train.steps=9"])
    assert args.overrides == [] and extra == ["train.steps=9"]  # what main() then takes in
    with pytest.raises(SystemExit):
        main(["encode", "ckpt", str(tmp_path), "-o", str(tmp_path / "o"), "stray=1"])
    assert "unrecognized arguments: stray=1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "runs/x", "--resume", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
