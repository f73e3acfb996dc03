"""Regenerate docs/arguments.md and the argument table in README.md from the methods' config dataclass fields."""

import re
from pathlib import Path

from losia_factory.llamafactory.arguments import arguments_markdown, arguments_table
from losia_factory.llamafactory.methods import LOSIA, REGISTERED

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- arguments:start -->", "<!-- arguments:end -->"


def readme_with_table(text: str) -> str:
    return re.sub(f"{START}.*?{END}", f"{START}\n{arguments_table(LOSIA)}{END}", text, flags=re.S)


if __name__ == "__main__":
    (ROOT / "docs" / "arguments.md").write_text(arguments_markdown(REGISTERED), encoding="utf-8")
    readme = ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print("wrote docs/arguments.md and the README argument table")
