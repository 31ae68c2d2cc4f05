"""The examples of docs/targets/ run as written, each page in order, as a reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGES = sorted((Path(__file__).resolve().parents[1] / "docs" / "targets").glob("*.md"))


def test_there_is_a_page_per_target_kind() -> None:
    assert [page.stem for page in PAGES] == ["callable", "class", "prototype", "region"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.stem)
def test_page_examples_run_in_order(page: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks, f"{page.name} has no python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
    assert namespace["explainer"].last.target_description["kind"] == page.stem
