"""What the coding agent is told. Kept short: the ticket and the tools say the rest."""

from __future__ import annotations

from factory.models import CommandResult, TicketRun

__all__ = ["system_prompt", "task_prompt"]


def system_prompt() -> str:
    return (
        "You are a careful software engineer working inside a locked-down sandbox. "
        "The repository is checked out in /workspace. There is no network access.\n"
        "Work in small steps: read the relevant code, reproduce the problem, make the smallest "
        "change that meets the acceptance criteria, and run the tests. Add or update tests when you fix a bug.\n"
        "Use the tools; do not describe changes you have not made. Do not commit; the factory commits for you.\n"
        "When the change is complete and the tests pass, call `submit` with a short summary for the pull request."
    )


def task_prompt(run: TicketRun, branch: str, tests_before: CommandResult | None) -> str:
    ticket = run.ticket
    lines = [
        f"Ticket {ticket.id} ({ticket.type.value}, priority {ticket.priority.value}): {ticket.display_title}",
        f"Repository: {run.repo.name}, branch {branch}",
    ]
    if ticket.description:
        lines += ["", "Description:", ticket.description]
    if ticket.context.filepaths:
        lines += ["", "Relevant files:", *[f"- {path}" for path in ticket.context.filepaths]]
    if ticket.context.error_logs.strip():
        lines += ["", "Error logs:", "```", ticket.context.error_logs.strip()[-6000:], "```"]
    lines += ["", "Acceptance criteria:", *[f"- {item}" for item in ticket.acceptance_criteria]]
    lines += ["", f"The factory checks your work by running: `{run.repo.test_command}`"]
    if tests_before is not None:
        verdict = "pass" if tests_before.ok else f"fail (exit code {tests_before.exit_code})"
        lines += [
            f"Before any change, the tests {verdict}. Last lines:",
            "```",
            tests_before.output_tail[-3000:],
            "```",
        ]
    return "\n".join(lines)
