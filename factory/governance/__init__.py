"""Loop 3, the quality gate: review checks on a pull request and the hallucination check of its dependencies.

Plain Python like the rest of ``factory/``: the governance activities call in here.
"""
