"""Every Python block of the README and of the docs runs alone, and its shape comments hold.

The blocks are collected from ``README.md`` and from every ``*.md`` and ``*.rst`` file under
``docs/`` (Markdown fences tagged ``python``, ``py`` or ``python3``; reStructuredText
``code-block``, ``code``, ``sourcecode`` and ``testcode`` directives in Python). Each block runs
alone in a fresh interpreter, so that it must import everything it uses and make its own
inputs, as a reader who copies it would. A trailing comment that starts with a shape, as in
``D = poincare.pairwise_dist(x, y)  # (8, 8), no 8x8x16 tensor``, is a promise: the assigned
name must hold a tensor of exactly that shape once the block has run.
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import textwrap
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON_TAGS = frozenset({"python", "py", "python3"})
RST_DIRECTIVES = ("code-block", "code", "sourcecode", "testcode")
BLOCK_TIMEOUT_S = 120
"""A block is a front-page example: a block that needs longer has no place there."""

_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_RST_OPEN = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?P<directive>[\w-]+)::\s*(?P<lang>\S*)\s*$",
)
_SHAPE = re.compile(r"^#\s*\((?P<dims>\s*\d+\s*(?:,\s*\d+\s*)*,?\s*)\)")

# Runs in the fresh interpreter: argv = [result file, names to report]; the code on stdin.
_DRIVER = """
import json, sys
import torch
code, out, names = sys.stdin.read(), sys.argv[1], sys.argv[2:]
torch.manual_seed(0)
namespace = {"__name__": "__main__"}
exec(compile(code, "<block>", "exec"), namespace)
shapes = {n: list(namespace[n].shape) if hasattr(namespace.get(n), "shape") else None
          for n in names}
with open(out, "w") as f:
    json.dump(shapes, f)
"""


@dataclass(frozen=True)
class Block:
    """A Python code block of a document: the file (relative to the root), the line of its
    first line of code (1-based) and the code."""

    path: str
    line: int
    code: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def markdown_blocks(text: str) -> list[tuple[int, str]]:
    """The ``(first line, code)`` of every fenced Python block of a Markdown text.

    A fence of three or more backticks or tildes (indented by at most three spaces) opens a
    block whose first word of the info string is its language; it closes at a fence of the
    same character at least as long, or at the end of the text (as in CommonMark). The fence's
    indentation is removed from the block's lines.
    """
    lines = text.splitlines()
    blocks: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        i += 1
        if opened is None:
            continue
        fence, indent = opened["fence"], len(opened["indent"])
        info = opened["info"].strip().lstrip("{.").split()
        lang = info[0].rstrip("}").lower() if info else ""
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        start, body = i, []
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            i += 1
        i += 1
        if lang in PYTHON_TAGS:
            blocks.append((start + 1, "\n".join(body) + "\n"))
    return blocks


def rst_blocks(text: str) -> list[tuple[int, str]]:
    """The ``(first line, code)`` of every Python code directive of a reStructuredText text.

    A directive of :data:`RST_DIRECTIVES` in ``python``/``py``/``python3`` (``testcode``
    needs none) holds the lines after it that are blank or indented deeper than it, after its
    option lines (``:caption: ...``); the body is dedented.
    """
    lines = text.splitlines()
    blocks: list[tuple[int, str]] = []
    for n, line in enumerate(lines):
        opened = _RST_OPEN.match(line)
        if opened is None or opened["directive"] not in RST_DIRECTIVES:
            continue
        lang = opened["lang"].lower() or ("python" if opened["directive"] == "testcode" else "")
        if lang not in PYTHON_TAGS:
            continue
        indent = len(opened["indent"])
        i = n + 1
        while i < len(lines) and lines[i].strip().startswith(":"):
            i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append((i, lines[i]))
            i += 1
        while body and not body[0][1].strip():
            body.pop(0)
        if body:
            code = textwrap.dedent("\n".join(text for _, text in body)).strip("\n") + "\n"
            blocks.append((body[0][0] + 1, code))
    return blocks


def documents(root: Path) -> list[Path]:
    """The README and every Markdown or reStructuredText file under ``docs/`` (outside build
    output), in a stable order."""
    docs = root / "docs"
    found = [
        p
        for p in sorted(docs.rglob("*"))
        if p.suffix in (".md", ".rst")
        and not any(part.startswith("_") for part in p.relative_to(docs).parts)
    ]
    return [root / "README.md", *found]


def collect(root: Path) -> list[Block]:
    """Every Python block of :func:`documents`."""
    blocks: list[Block] = []
    for path in documents(root):
        extract = rst_blocks if path.suffix == ".rst" else markdown_blocks
        rel = path.relative_to(root).as_posix()
        blocks += [Block(rel, line, code) for line, code in extract(path.read_text())]
    return blocks


def shape_promises(code: str) -> dict[str, tuple[int, ...]]:
    """The shape each name must have after ``code`` runs, from its shape comments.

    A comment that starts with a shape, ``# (8, 10), ...``, must close a single-name
    assignment (``logits = mlr(x)  # (8, 10)``); any other statement carrying one raises
    :class:`ValueError`, so that no promise goes unchecked.
    """
    comments = {
        tok.start[0]: tok.string
        for tok in tokenize.generate_tokens(io.StringIO(code).readline)
        if tok.type == tokenize.COMMENT and _SHAPE.match(tok.string)
    }
    targets: dict[int, str] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.end_lineno is not None:
            names = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(names) == 1 and isinstance(names[0], ast.Name):
                targets[node.end_lineno] = names[0].id
    promises: dict[str, tuple[int, ...]] = {}
    for line, comment in comments.items():
        if line not in targets:
            raise ValueError(f"line {line}: {comment!r} does not close a single-name assignment")
        match = _SHAPE.match(comment)
        assert match is not None
        dims = tuple(int(d) for d in match["dims"].split(",") if d.strip())
        promises[targets[line]] = dims
    return promises


def run_block(code: str, names: list[str], tmp: Path) -> dict[str, list[int] | None]:
    """Run ``code`` alone in a fresh interpreter at the repository root; return the shape of
    each of ``names`` afterwards (``None`` for a value without one). A failure of the block
    fails the test with its stderr."""
    out = tmp / "shapes.json"
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(out), *names],
        input=code,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    if done.returncode != 0:
        pytest.fail(f"the block exits with {done.returncode}:\n{done.stderr}", pytrace=False)
    shapes: dict[str, list[int] | None] = json.loads(out.read_text())
    return shapes


BLOCKS = collect(ROOT)


def check_block(block: Block, tmp: Path) -> None:
    """Run ``block`` alone and assert its shape comments and that it ran within half of
    :data:`BLOCK_TIMEOUT_S`."""
    promises = shape_promises(block.code)
    start = time.perf_counter()
    shapes = run_block(block.code, sorted(promises), tmp)
    seconds = time.perf_counter() - start
    for name, dims in promises.items():
        assert shapes[name] == list(dims), f"{block.where}: {name} has shape {shapes[name]}"
    assert seconds < BLOCK_TIMEOUT_S / 2, f"{block.where} took {seconds:.0f} s"


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in BLOCKS])
def test_block_runs_alone_and_keeps_its_shape_comments(block: Block, tmp_path: Path) -> None:
    check_block(block, tmp_path)


def test_the_readme_blocks_are_found_and_promise_shapes() -> None:
    readme = [b for b in BLOCKS if b.path == "README.md"]
    assert len(readme) >= 3
    assert shape_promises(readme[0].code)["D"] == (8, 8)
    assert sum(len(shape_promises(b.code)) for b in readme) >= 6


def test_markdown_fences_of_python_only(tmp_path: Path) -> None:
    text = (
        "intro\n```bash\nls\n```\n\n```python\nx = 1\n```\n"
        "  ~~~~ py title\n  y = [\n    2]\n  ~~~~\n```text\nz\n```\n```{python}\nw = 3\n"
    )
    assert markdown_blocks(text) == [(7, "x = 1\n"), (10, "y = [\n  2]\n"), (17, "w = 3\n")]


def test_rst_directives_of_python_only() -> None:
    text = (
        "Title\n=====\n\n.. code-block:: python\n   :caption: one\n\n   a = 1\n\n"
        "   b = a\n\nback\n\n.. code:: bash\n\n   ls\n\n.. testcode::\n\n    c = 2\n"
    )
    assert rst_blocks(text) == [(7, "a = 1\n\nb = a\n"), (19, "c = 2\n")]


def test_docs_are_picked_up_when_they_appear(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("```python\nr = 0\n```\n")
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    (tmp_path / "docs" / "figure.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "guide" / "ops.rst").write_text(".. code-block:: python\n\n   s = 1\n")
    (tmp_path / "docs" / "_build").mkdir()
    (tmp_path / "docs" / "_build" / "copy.md").write_text("```python\nt = 2\n```\n")
    (tmp_path / "docs" / "index.md").write_text("```py\nu = 3\n```\n")
    assert collect(tmp_path) == [
        Block("README.md", 2, "r = 0\n"),
        Block("docs/guide/ops.rst", 3, "s = 1\n"),
        Block("docs/index.md", 2, "u = 3\n"),
    ]


def test_a_lying_shape_comment_fails(tmp_path: Path) -> None:
    code = "import torch\n\nz = torch.zeros(2, 3)  # (3, 2)\n"
    assert shape_promises(code) == {"z": (3, 2)}
    with pytest.raises(AssertionError, match=r"doc.md:1: z has shape \[2, 3\]"):
        check_block(Block("doc.md", 1, code), tmp_path)
    check_block(Block("doc.md", 1, code.replace("(3, 2)", "(2, 3)")), tmp_path)
    with pytest.raises(ValueError, match="single-name assignment"):
        shape_promises("a, b = 1, 2  # (8,)\n")


def test_a_block_that_is_not_self_contained_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="NameError: name 'poincare'"):
        run_block("import torch\n\nx = poincare.expmap0(torch.zeros(3))\n", [], tmp_path)
    with pytest.raises(pytest.fail.Exception, match="has no attribute 'nn'"):
        run_block("import poincare\n\nm = poincare.nn.HyperbolicMLR(4, 2)\n", [], tmp_path)
