"""Print the README's set-up commands, one per line: the ```bash blocks of its "## Set-up" section.

.ci/run executes exactly these, so CI runs what a new user is told to run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def setup_commands(readme: str) -> list[str]:
    section = readme.split("\n## Set-up\n", 1)[1].split("\n## ", 1)[0]
    return [" ".join(block.split("\n")).strip() for block in re.findall(r"```bash\n(.*?)\n```", section, re.S)]


if __name__ == "__main__":
    print("\n".join(setup_commands(Path(sys.argv[1]).read_text(encoding="utf-8"))))
