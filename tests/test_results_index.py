"""results/ holds only what results/README.md lists, and every results/ path the documentation cites exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _listed_names(text: str) -> set[str]:
    """The code spans of results/README.md, with brace groups (`a.{json,png}`) expanded."""
    names = set()
    for cell in re.findall(r"`([^`]+)`", text):
        todo = [cell]
        while todo:
            c = todo.pop()
            m = re.search(r"\{([^}]*)\}", c)
            if m:
                todo += [c[:m.start()] + alt + c[m.end():] for alt in m.group(1).split(",")]
            else:
                names.add(c)
    return names


def _is_listed(rel: str, names: set[str]) -> bool:
    if rel in names:
        return True
    if any(rel.startswith(folder) and rel[len(folder):] in names for folder in names if folder.endswith("/")):
        return True
    parent = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    base = rel.rsplit("/", 1)[-1]
    # shorthand rows: "..._seed3000.json" beside a full sibling name; ".png" / ".rows.jsonl" beside the JSON
    return any(n.startswith("...") and rel.endswith(n[3:]) for n in names) or any(
        n in (".png", ".rows.jsonl") and rel.endswith(n) and (parent + base[: -len(n)] + ".json") in names
        for n in names)


def test_every_results_file_is_listed() -> None:
    names = _listed_names((ROOT / "results" / "README.md").read_text())
    files = [p.relative_to(ROOT / "results").as_posix() for p in (ROOT / "results").rglob("*") if p.is_file()]
    unlisted = [f for f in files if f != "README.md" and not _is_listed(f, names)]
    assert not unlisted, f"list these in results/README.md (figure, document, command) or remove them: {unlisted}"


def test_every_cited_results_path_exists() -> None:
    bad = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(r"(?:\.\./)?(results/[A-Za-z0-9_./-]+)", doc.read_text()):
            path = m.group(1).rstrip(".)")
            if "{" not in path and not (ROOT / path).exists():
                bad.append(f"{doc.name}: {path}")
    assert not bad, bad


def test_the_check_sees_an_unlisted_file() -> None:
    names = _listed_names("| `a.json` | x |\n| `b.{json,png}` | y |\n| `dir/` (`c.json`) | z |")
    assert _is_listed("a.json", names) and _is_listed("b.png", names) and _is_listed("dir/c.json", names)
    assert not _is_listed("stray.json", names) and not _is_listed("dir/d.json", names)
