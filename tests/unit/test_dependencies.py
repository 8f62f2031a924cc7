"""Which dependencies a change adds: real ``git diff`` output of real repositories, one manifest type at a time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from factory.errors import DiffInvalid
from factory.governance.dependencies import DependencyRef, dependencies_from_diff, manifest_kind


def git_diff(tmp_path: Path, before: dict[str, str], after: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Commit ``before`` in a fresh repository, change the tree to ``after``; return ``git diff`` and the new files."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    git("init", "-q", "-b", "main")
    for path, content in before.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content)
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "before")
    for path in before.keys() - after.keys():
        (repo / path).unlink()
    for path, content in after.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content)
    git("add", "-A")
    return git("diff", "--cached"), dict(after)


def summary(refs: list[DependencyRef]) -> list[tuple[str, str | None, str]]:
    return [(ref.name, ref.version, ref.source) for ref in refs]


PYPROJECT_BEFORE = """\
[project]
name = "shop"
version = "0.1.0"
dependencies = [
    "httpx>=0.27",
    "pydantic==2.7.1",
]

[project.optional-dependencies]
dev = ["pytest>=8"]

[tool.ruff]
line-length = 100
"""

PYPROJECT_AFTER = """\
[project]
name = "shop"
version = "0.1.0"
description = "A shop"  # not a dependency
dependencies = [
    "httpx>=0.27",
    "pydantic==2.8.2",
    "rich[jupyter]>=13; python_version >= '3.9'",
    "stripe-sdk-pro==1.0.0",  # the "pro" SDK
]

[project.optional-dependencies]
dev = ["pytest>=8", "pytest-cov==5.0.0"]

[dependency-groups]
lint = ["ruff==0.6.0"]

[tool.ruff]
line-length = 120
extend-exclude = ["requests"]
"""


def test_pyproject_pep621_added_and_changed_dependencies(tmp_path: Path) -> None:
    """PEP 621 and PEP 735 entries on added lines count, with extras and markers dropped and ``==`` pins kept;
    unchanged entries on a rewritten line and strings of other tables do not."""
    diff, after = git_diff(tmp_path, {"pyproject.toml": PYPROJECT_BEFORE}, {"pyproject.toml": PYPROJECT_AFTER})
    refs = dependencies_from_diff(diff, after)
    assert summary(refs) == [
        ("pydantic", "2.8.2", "pyproject.toml:7"),
        ("rich", None, "pyproject.toml:8"),
        ("stripe-sdk-pro", "1.0.0", "pyproject.toml:9"),
        ("pytest-cov", "5.0.0", "pyproject.toml:13"),
        ("ruff", "0.6.0", "pyproject.toml:16"),
    ]
    assert {ref.ecosystem for ref in refs} == {"pypi"}
    assert (refs[0].path, refs[0].line, refs[0].kind) == ("pyproject.toml", 7, "manifest")


def test_pyproject_comma_added_to_an_unchanged_entry_is_not_a_change(tmp_path: Path) -> None:
    """Appending an item rewrites the previous last line (a comma); only the new item is reported."""
    before = '[project]\nname = "x"\ndependencies = [\n    "httpx>=0.27"\n]\n'
    after = '[project]\nname = "x"\ndependencies = [\n    "httpx>=0.27",\n    "anyio>=4",\n]\n'
    diff, files = git_diff(tmp_path, {"pyproject.toml": before}, {"pyproject.toml": after})
    assert summary(dependencies_from_diff(diff, files)) == [("anyio", None, "pyproject.toml:5")]


def test_poetry_dependency_tables(tmp_path: Path) -> None:
    """Poetry tables: a bare version is an exact pin, inline tables give their ``version``; ``python``, path and
    git dependencies are not registry packages."""
    before = (
        '[tool.poetry]\nname = "app"\nversion = "1.0.0"\n\n'
        '[tool.poetry.dependencies]\npython = "^3.11"\nrequests = "^2.31"\n\n'
        '[tool.poetry.group.dev.dependencies]\npytest = "^8.0"\n'
    )
    after = (
        '[tool.poetry]\nname = "app"\nversion = "1.0.0"\n\n'
        '[tool.poetry.dependencies]\npython = "^3.12"\nrequests = "^2.31"\nhttpx = "0.27.0"\n'
        'fastapi = { version = "^0.110", extras = ["all"] }\nmylib = { path = "../mylib", develop = true }\n\n'
        '[tool.poetry.group.dev.dependencies]\npytest = "^8.0"\npytest-asyncio = "==0.23.6"\n'
        'internal = { git = "https://github.com/org/internal.git", tag = "v1" }\n'
    )
    diff, files = git_diff(tmp_path, {"pyproject.toml": before}, {"pyproject.toml": after})
    assert summary(dependencies_from_diff(diff, files)) == [
        ("httpx", "0.27.0", "pyproject.toml:8"),
        ("fastapi", None, "pyproject.toml:9"),
        ("pytest-asyncio", "0.23.6", "pyproject.toml:14"),
    ]


REQUIREMENTS_AFTER = """\
# core
django==5.0.6
-r requirements-base.txt
-e git+https://github.com/org/lib.git#egg=lib
--index-url https://pypi.org/simple
celery[redis]==5.4.0 ; python_version < "3.13"   # the queue
numpy>=1.26
./vendor/thing
https://example.com/pkg-1.0.tar.gz
flask-jwt-simple-auth==0.0.1 \\
    --hash=sha256:2cf1c4c6bd6a6bd0a4d3b0a8f7a1e1cd9a0f0e1a3b4c5d6e7f8091a2b3c4d5e6
pkg @ https://example.com/pkg-1.0-py3-none-any.whl
# a comment that mentions requests==1.0
"""


@pytest.mark.parametrize("path", ["requirements.txt", "requirements-dev.txt", "requirements/prod.txt"])
def test_requirements_files(tmp_path: Path, path: str) -> None:
    """pip requirement files: comments, ``-r``/``-e``/options, paths, URLs and direct references are skipped;
    extras, markers, inline comments and ``--hash`` options are stripped."""
    diff, files = git_diff(tmp_path, {path: "# core\ndjango==5.0.6\n"}, {path: REQUIREMENTS_AFTER})
    assert summary(dependencies_from_diff(diff, files)) == [
        ("celery", "5.4.0", f"{path}:6"),
        ("numpy", None, f"{path}:7"),
        ("flask-jwt-simple-auth", "0.0.1", f"{path}:10"),
    ]


def test_setup_cfg_install_requires_and_extras(tmp_path: Path) -> None:
    """setup.cfg: continuation lines of ``install_requires`` and of each ``extras_require`` key; other keys ignored."""
    before = "[metadata]\nname = legacy\n\n[options]\npackages = find:\ninstall_requires =\n    click>=8\n"
    after = (
        "[metadata]\nname = legacy\nversion = 1.0\n\n[options]\npackages = find:\ninstall_requires =\n"
        '    click>=8\n    colorama==0.4.6\n    tabulate ; sys_platform == "win32"\npython_requires = >=3.9\n\n'
        "[options.extras_require]\nyaml =\n    pyyaml==6.0.1\n"
    )
    diff, files = git_diff(tmp_path, {"setup.cfg": before}, {"setup.cfg": after})
    assert summary(dependencies_from_diff(diff, files)) == [
        ("colorama", "0.4.6", "setup.cfg:9"),
        ("tabulate", None, "setup.cfg:10"),
        ("pyyaml", "6.0.1", "setup.cfg:15"),
    ]


PACKAGE_JSON_BEFORE = """\
{
  "name": "web",
  "version": "1.0.0",
  "scripts": {
    "test": "jest"
  },
  "dependencies": {
    "express": "^4.18.2"
  },
  "devDependencies": {
    "jest": "^29.0.0"
  }
}
"""

PACKAGE_JSON_AFTER = """\
{
  "name": "web",
  "version": "1.1.0",
  "scripts": {
    "test": "jest",
    "lint": "eslint ."
  },
  "dependencies": {
    "express": "^4.19.2",
    "left-pad": "1.3.0",
    "@types/node": "=20.11.0",
    "lodash-es": "npm:lodash@4.17.21",
    "my-fork": "github:me/my-fork",
    "local-lib": "file:../local-lib",
    "theme": "acme/theme#v2"
  },
  "devDependencies": {
    "jest": "^29.0.0",
    "eslint": "9.1.0"
  },
  "peerDependencies": {
    "react": ">=18"
  }
}
"""


def test_package_json_dependency_sections(tmp_path: Path) -> None:
    """package.json: the four dependency sections only; exact versions pin, ranges do not; an ``npm:`` alias
    names the real package; git, GitHub and file specs are not registry packages; a comma-only change is no change."""
    diff, files = git_diff(tmp_path, {"package.json": PACKAGE_JSON_BEFORE}, {"package.json": PACKAGE_JSON_AFTER})
    refs = dependencies_from_diff(diff, files)
    assert summary(refs) == [
        ("express", None, "package.json:9"),
        ("left-pad", "1.3.0", "package.json:10"),
        ("@types/node", "20.11.0", "package.json:11"),
        ("lodash", "4.17.21", "package.json:12"),
        ("eslint", "9.1.0", "package.json:19"),
        ("react", None, "package.json:22"),
    ]
    assert {ref.ecosystem for ref in refs} == {"npm"}


def test_package_json_section_on_one_line(tmp_path: Path) -> None:
    """A dependency section written on one line is read entry by entry; only the new entry counts."""
    before = '{"name": "tiny", "dependencies": {"ms": "2.1.3"}}\n'
    after = '{"name": "tiny", "dependencies": {"ms": "2.1.3", "chalk": "5.3.0"}, "scripts": {"x": "y"}}\n'
    diff, files = git_diff(tmp_path, {"package.json": before}, {"package.json": after})
    assert summary(dependencies_from_diff(diff, files)) == [("chalk", "5.3.0", "package.json:1")]


def test_dependency_group_includes_are_not_packages(tmp_path: Path) -> None:
    """PEP 735 ``{include-group = "..."}`` tables name a group, not a package."""
    after = '[dependency-groups]\ntest = ["pytest>=8"]\ndev = [{include-group = "test"}, "ipython"]\n'
    diff, files = git_diff(tmp_path, {"README.md": "x\n"}, {"README.md": "x\n", "pyproject.toml": after})
    assert summary(dependencies_from_diff(diff, files)) == [
        ("pytest", None, "pyproject.toml:2"),
        ("ipython", None, "pyproject.toml:3"),
    ]


def test_manifest_pieced_together_from_hunks_when_the_file_is_not_given() -> None:
    """Without ``files_after`` the section is read from the hunk's context lines."""
    diff = (
        "diff --git a/package.json b/package.json\n"
        "index 1b2c3d4..5e6f7a8 100644\n"
        "--- a/package.json\n"
        "+++ b/package.json\n"
        "@@ -5,7 +5,8 @@\n"
        '     "test": "jest"\n'
        "   },\n"
        '   "dependencies": {\n'
        '-    "express": "^4.18.2"\n'
        '+    "express": "^4.18.2",\n'
        '+    "axois": "1.6.8"\n'
        "   },\n"
        '   "devDependencies": {\n'
        '     "jest": "^29.0.0"\n'
    )
    assert summary(dependencies_from_diff(diff, {})) == [("axois", "1.6.8", "package.json:9")]


PYPROJECT_APP = '[project]\nname = "app"\ndependencies = ["pyyaml>=6", "httpx", "azure-storage-blob"]\n'

SERVICE_PY = '''\
"""Orders service."""

from __future__ import annotations

import json
import os.path
from collections import OrderedDict

import httpx
import yaml
from azure.storage.blob import BlobClient
from google.protobuf import message

from app.models import Order
from . import models
import requests_cache
from fancy_payments.client import Charge
import cv2


def render() -> str:
    text = """
import not_an_import
"""
    import numpy as np

    return text + str(np)
'''


def test_undeclared_imports_are_reported(tmp_path: Path) -> None:
    """New imports of modules that are not stdlib, not the repository's own and not declared are reported as
    ``kind="import"``; names import≠distribution map (cv2 → opencv-python); text inside strings is not an import."""
    before = {"pyproject.toml": PYPROJECT_APP, "app/__init__.py": "", "app/models.py": "class Order: ...\n"}
    after = {**before, "app/service.py": SERVICE_PY}
    diff, files = git_diff(tmp_path, before, after)
    refs = dependencies_from_diff(diff, files)
    assert summary(refs) == [
        ("requests_cache", None, "import in app/service.py:16"),
        ("fancy_payments", None, "import in app/service.py:17"),
        ("opencv-python", None, "import in app/service.py:18"),
        ("numpy", None, "import in app/service.py:25"),
    ]
    assert {(ref.kind, ref.ecosystem) for ref in refs} == {("import", "pypi")}
    assert (refs[0].path, refs[0].line) == ("app/service.py", 16)


def test_script_imports_of_sibling_modules_and_src_layout_are_local(tmp_path: Path) -> None:
    """A module next to the importing script, or a package under ``src/``, is the repository's own."""
    before = {
        "pyproject.toml": '[project]\nname = "tool"\ndependencies = []\n',
        "scripts/helpers.py": "X = 1\n",
        "src/tool/__init__.py": "",
    }
    after = {**before, "scripts/run.py": "import helpers\nimport tomllib\nfrom tool import cli\n"}
    diff, files = git_diff(tmp_path, before, after)
    assert dependencies_from_diff(diff, files) == []


def test_import_declared_in_the_same_change_is_not_reported(tmp_path: Path) -> None:
    """Adding ``rich`` to the manifest and importing it in the same change reports the dependency only."""
    before = {"requirements.txt": "httpx\n", "main.py": "import httpx\n"}
    after = {
        "requirements.txt": "httpx\nrich==13.7.1\n",
        "main.py": "import httpx\nimport rich\nfrom dateutil import tz\n",
    }
    diff, files = git_diff(tmp_path, before, after)
    assert summary(dependencies_from_diff(diff, files)) == [
        ("rich", "13.7.1", "requirements.txt:2"),
        ("python-dateutil", None, "import in main.py:3"),
    ]


def test_imports_without_the_file_fall_back_to_the_added_lines() -> None:
    """Without the file's content, import lines of the diff are read directly (relative imports still skipped)."""
    diff = (
        "diff --git a/tool.py b/tool.py\n"
        "new file mode 100644\n"
        "index 0000000..3f4e5d6\n"
        "--- /dev/null\n"
        "+++ b/tool.py\n"
        "@@ -0,0 +1,4 @@\n"
        "+import sys, requests\n"
        "+from .local import thing\n"
        "+from bs4 import BeautifulSoup\n"
        "+print(sys.argv)\n"
    )
    assert summary(dependencies_from_diff(diff, {})) == [
        ("requests", None, "import in tool.py:1"),
        ("beautifulsoup4", None, "import in tool.py:3"),
    ]


def test_deleted_manifest_adds_nothing(tmp_path: Path) -> None:
    """Removing a requirements file (or any line) adds no dependency."""
    diff, files = git_diff(
        tmp_path, {"requirements.txt": "requests==2.32.3\n", "README.md": "x\n"}, {"README.md": "x\n"}
    )
    assert dependencies_from_diff(diff, files) == []


def test_malformed_diff_is_refused() -> None:
    """A hunk shorter than its header says is a :class:`DiffInvalid`, not a silent empty result."""
    with pytest.raises(DiffInvalid):
        dependencies_from_diff("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n+only one line\n", {})


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("pyproject.toml", "pyproject"),
        ("services/api/pyproject.toml", "pyproject"),
        ("requirements.txt", "requirements"),
        ("requirements-dev.in", "requirements"),
        ("requirements/test.txt", "requirements"),
        ("setup.cfg", "setup.cfg"),
        ("frontend/package.json", "package.json"),
        ("docs/notes.txt", None),
        ("package-lock.json", None),
    ],
)
def test_manifest_kinds(path: str, kind: str | None) -> None:
    """Manifests are recognised by file name anywhere in the tree; lock files and other text are not manifests."""
    assert manifest_kind(path) == kind
