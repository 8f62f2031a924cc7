"""How well the Hallucination Check tells real PyPI packages from made-up and typo-squatted names.

Runs ``check_dependency`` on a fixed list of 50 real PyPI projects (30 from the
bundled popular list, 20 outside it, several of them one edit away from a popular
name: ``scapy``/``scipy``, ``pyaml``/``pyyaml``, ``parse``/``parso``, ``attr``/``attrs``)
and 50 names that do not exist (typos of popular packages and names of the kind a
model invents), against the REAL registry (``GovernanceConfig().pypi_url``, pypi.org
unless configured), with no cache. Prints the true-positive rate (fake names
blocked), the false-positive rate (real packages blocked), the time taken and
every misclassified name with its reasons.

Every fake name was checked to be absent from PyPI when the list was made (with
this check itself); ``httpxx`` was swapped out for ``flaskk`` because it exists
(3 releases, about a year old, so the typo-squat rule lets it pass).

    uv run python bench/check_deps_accuracy.py

Needs the network; the unit tests never do.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.config import GovernanceConfig  # noqa: E402
from factory.governance.dependencies import DependencyRef  # noqa: E402
from factory.governance.hallucination import DependencyVerdict, PopularNames, check_dependency  # noqa: E402
from factory.governance.registry import RegistryClient  # noqa: E402

REAL = [
    # on the popular list
    "requests", "numpy", "pandas", "django", "flask", "fastapi", "pydantic", "sqlalchemy", "pytest", "boto3",
    "scipy", "matplotlib", "scikit-learn", "torch", "httpx", "aiohttp", "celery", "redis", "click", "rich",
    "typer", "structlog", "uvicorn", "jinja2", "pyyaml", "pillow", "cryptography", "beautifulsoup4", "tqdm", "attrs",
    # not on it; the first five sit one edit from a popular name
    "scapy", "pyaml", "parse", "attr", "jsonpath", "duckdb", "sqlmodel", "litestar", "textual", "boltons",
    "glom", "cattrs", "msgspec", "freezegun", "respx", "humanize", "questionary", "pyinstrument", "httpie", "emoji",
]  # fmt: skip

FAKE = [
    # typos of popular packages
    "reqeusts", "requsets", "numpyy", "nunpy", "pandsa", "djnago", "flsak", "fastapii", "tensorflw", "scikit-lern",
    "matplotlb", "sqlalchemyy", "pydanitc", "celerry", "urlib3", "cryptograhpy", "beautifulsop4", "pyymal", "jinja3",
    "uvicron", "gunicron", "pytets", "boto33", "scipyy", "flaskk",
    # names of the kind a model makes up
    "fastapi-utils-pro-max", "flask-jwt-simple-auth", "django-rest-auth-plus-pro", "pandas-profiler-extended-pro",
    "numpy-financial-advanced-pro", "torch-lightning-utils-pro", "sklearn-auto-tuner-plus",
    "pydantic-settings-yaml-loader-pro", "aiohttp-retry-client-pro", "sqlalchemy-async-helpers-pro",
    "langchain-memory-vectorstore-pro", "openai-function-calling-helper-pro", "llm-json-output-parser-pro",
    "celery-beat-redis-scheduler-plus", "pytest-async-fixtures-pro", "fastapi-crud-generator-pro-max",
    "boto3-s3-sync-helper-pro", "django-tenant-schemas-pro-max", "flask-sqlalchemy-pagination-plus",
    "httpx-retry-transport-pro", "jwt-auth-middleware-python-pro", "kafka-python-consumer-utils-pro",
    "redis-cache-decorator-pro-max", "pandas-excel-writer-pro-max", "structlog-json-formatter-pro",
]  # fmt: skip


def run() -> int:
    assert len(REAL) == 50 and len(FAKE) == 50 and not set(REAL) & set(FAKE)
    settings = GovernanceConfig()
    popular = PopularNames.bundled()
    now = datetime.now(UTC)
    verdicts: dict[str, DependencyVerdict] = {}
    started = time.perf_counter()
    with RegistryClient(
        settings.pypi_url,
        settings.npm_url,
        timeout_s=settings.registry_timeout_s,
        cache_dir=None,
        ttl_s=settings.registry_cache_ttl_s,
    ) as client:
        for name in REAL + FAKE:
            ref = DependencyRef(ecosystem="pypi", name=name, source="bench", kind="command")
            verdicts[name] = check_dependency(
                ref, client, popular=popular, now=now, new_package_days=settings.new_package_days
            )
    elapsed = time.perf_counter() - started

    blocked_fake = [n for n in FAKE if verdicts[n].blocking]
    blocked_real = [n for n in REAL if verdicts[n].blocking]
    unverified = [n for n, v in verdicts.items() if v.status == "unverified"]
    print(f"registry: {settings.pypi_url}   names: {len(REAL)} real, {len(FAKE)} fake")
    print(f"true-positive rate  (fake blocked): {len(blocked_fake)}/{len(FAKE)} = {len(blocked_fake) / len(FAKE):.0%}")
    print(f"false-positive rate (real blocked): {len(blocked_real)}/{len(REAL)} = {len(blocked_real) / len(REAL):.0%}")
    print(f"unverified (registry unreachable): {len(unverified)}")
    print(f"time: {elapsed:.1f} s for {len(verdicts)} names ({elapsed / len(verdicts) * 1000:.0f} ms per name)")
    typo_flagged = [n for n in FAKE if any("did you mean" in r or "typo-squat" in r for r in verdicts[n].reasons)]
    print(f"fake names also named as near misses of a popular package: {len(typo_flagged)}")
    warned_real = [n for n in REAL if verdicts[n].warnings]
    if warned_real:
        print(f"real packages with warnings only (not blocking): {', '.join(warned_real)}")
    missed = [n for n in FAKE if not verdicts[n].blocking]
    if missed or blocked_real:
        print("misclassified:")
        for name in missed:
            print(f"  fake passed:   {name}  {'; '.join(verdicts[name].warnings) or '(no warning)'}")
        for name in blocked_real:
            print(f"  real blocked:  {name}  {'; '.join(verdicts[name].reasons)}")
    else:
        print("misclassified: none")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
