"""The command line: JSON on stdout only, errors as one paragraph with exit status 2."""

import json
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from miascale.cli import app

runner = CliRunner()


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "miascale.cli", *args], capture_output=True, text=True, env=env
    )


def test_data_list_json():
    r = runner.invoke(app, ["data", "list", "--json"])
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert {row["name"] for row in rows} == {"fashion-mnist", "wordnet", "digits"}
    assert all(row["present"] for row in rows)  # CI installs the Debian packages


def test_features_json_then_cache(tmp_path):
    p = tmp_path / "f.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.integers(0, 255, (30, 8, 8), dtype=np.uint8), y=np.repeat([0, 1, 2], 10))
    args = ["features", "--dataset", f"npz:{p}", "--resolution", "32", "--json"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)  # stdout holds JSON only; progress went to stderr
    assert a["train_shape"] == [24, 1280] and not a["from_cache"]
    second = json.loads(run_cli(*args).stdout)
    assert second["from_cache"] and second["cache_key"] == a["cache_key"]


def test_errors_are_one_paragraph_without_traceback(tmp_path):
    cases = [
        (["features", "--dataset", "cifar"], "Unknown dataset"),
        (["features", "--backbone", "resnet"], "Unknown backbone"),
        (["features", "--resolution", "0"], "positive integer"),
        (["features", "--dataset", f"images:{tmp_path}/none"], "does not exist"),
        (["data", "fetch", "imagenet"], "Unknown dataset"),
    ]
    for args, msg in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""


def test_every_command_function_fits_a_screen():
    """A command is a screenful: at most 40 lines from its def to its last line."""
    import ast
    from pathlib import Path

    import typer

    import miascale.cli

    root = Path(miascale.cli.__file__).parent
    commands = {c.callback.__name__ for c in _commands(typer.main.get_command(app))}
    seen = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in commands:
                seen.add(node.name)
                length = node.end_lineno - node.lineno + 1
                assert length <= 40, f"{path.name}:{node.name} has {length} lines"
    assert seen == commands and len(commands) >= 12


def _commands(group):
    for c in group.commands.values():
        yield from _commands(c) if hasattr(c, "commands") else [c]


def test_help_lists_every_option_with_its_help():
    for command, text in (("audit", "RMIA population points"), ("sweep", "Run directory"),
                          ("theory", "Simulated targets per S")):  # fmt: skip
        r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and text in r.stdout, r.stdout


def test_audit_and_sweep_defaults_come_from_one_place():
    """The defaults of the settings a sweep shares with audit agree in AuditConfig, the sweep's
    AuditSettings and the option table (else audit and sweep cells would differ silently)."""
    from dataclasses import fields

    from miascale.audit import AuditConfig
    from miascale.cli.options import OPTIONS
    from miascale.experiments.settings import AuditSettings, build_audit_config

    config_defaults = {f.name: f.default for f in fields(AuditConfig)}
    built = build_audit_config(shots=1, variants=("lira-online",))
    for f in fields(AuditSettings):
        if f.name in config_defaults:
            assert f.default == config_defaults[f.name], f.name
        if f.name in OPTIONS and OPTIONS[f.name].default is not None:
            assert OPTIONS[f.name].default == f.default, f.name
    assert built == AuditConfig(shots=1, attack="lira-online")


def test_audit_out_may_end_in_npz(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    p = tmp_path / "f.npz"
    np.savez(p, features=rng.normal(size=(90, 5)) + y[:, None], labels=y)
    out = tmp_path / "odd.npz"
    r = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{p}", "--backbone", "identity",
                                 "-s", "2", "-m", "4", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(x.name for x in out.iterdir()) == ["audit.json", "signals.npz"]
