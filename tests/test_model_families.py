"""Every model family of docs/models.md builds, runs through SegmentationModel and takes NAA and the
reliable ensemble, by running the page's snippets as written (common lines + family + check)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
SECTION = PAGE.read_text().split("## Model families", 1)[1]
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)
COMMON, *FAMILY_BLOCKS, CHECK = BLOCKS
FAMILIES = {re.match(r"# family: (.+)\n", block).group(1): block for block in FAMILY_BLOCKS}
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def test_the_page_lists_the_twelve_families_in_its_table():
    assert len(FAMILIES) == 12 and all(block.startswith("# family: ") for block in FAMILY_BLOCKS)
    table = SECTION.split("**What")[0]
    for name in FAMILIES:
        family = name.split(" (")[0].replace("smp ", "smp ")
        assert family.split()[1] in table, name


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_family_snippet_runs_naa_and_the_reliable_ensemble(name):
    block = FAMILIES[name]
    if "transformers" in block and not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed (pip install 'segrobust[hf]')")
    namespace: dict = {"__name__": f"docs_models_{name}"}
    exec(compile(COMMON + block + CHECK, f"docs/models.md: {name}", "exec"), namespace)
    assert not any(module.training for module in namespace["model"].model.modules())  # eval mode kept
