"""The README's "From Python" examples run, in order, in an empty folder: they cannot go stale."""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str = "From Python") -> list[str]:
    """The ```python blocks of one ``## section`` of the README, in order."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```", body, flags=re.S | re.M)


def test_readme_from_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md (From Python, block {i + 1})", "exec"), namespace)
    # what the examples promise
    import miascale

    assert isinstance(namespace["result"], miascale.AuditResult)
    assert isinstance(namespace["run"], miascale.Run)
    assert isinstance(namespace["law"], miascale.ScalingFit)
    assert isinstance(namespace["plan"], miascale.Plan)
    assert len(namespace["df"]) == 10  # 5 S × 2 seeds × 1 variant × 1 FPR level
    assert os.path.isfile(tmp_path / "runs" / "readme" / "results.sqlite")
