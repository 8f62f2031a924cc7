"""The offline scripted model, called through the real litellm path (`factory.llm.client.complete`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from factory.config import Settings
from factory.errors import BudgetExhausted, ModelError, ModelRequestRefused, PlaybookError
from factory.llm.client import complete
from factory.llm.pricing import resolve_model_spec
from factory.llm.tokens import count_prompt_tokens
from factory.models import BudgetCaps, ModelSpec, Spend

PLAYBOOKS = Path(__file__).parent.parent / "fixtures" / "playbooks"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a shell command in the sandbox.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
    }
]
TASK: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a careful engineer."},
    {"role": "user", "content": "Fix the division by zero in calc/ops.py."},
]


def scripted(name: str) -> ModelSpec:
    return resolve_model_spec("scripted", Settings(), playbook=PLAYBOOKS / name)


@pytest.fixture
def call_log(tmp_path: Path) -> Iterator[Path]:
    """The registered scripted provider logs its calls to a fresh file for this test only."""
    from factory.llm.scripted import register_scripted_provider

    handler = register_scripted_provider()
    handler.call_log = tmp_path / "calls.jsonl"
    yield handler.call_log
    handler.call_log = None


def logged_steps(call_log: Path) -> list[int]:
    if not call_log.exists():
        return []
    return [json.loads(line)["step"] for line in call_log.read_text().splitlines()]


def after(messages: list[dict[str, Any]], reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation once the reply's tool calls have been answered."""
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in reply.get("tool_calls", [])]
    return [*messages, reply, *results]


@pytest.mark.asyncio
async def test_the_first_call_answers_the_first_step_with_deterministic_ids(call_log: Path) -> None:
    """No assistant message yet: step 0, its text, and tool call ids call_0_<index>."""
    completion = await complete(scripted("three-steps.yaml"), TASK, TOOLS, BudgetCaps(), Spend())
    assert completion.message == {
        "role": "assistant",
        "content": "Plan: run the tests to see the failure.",
        "tool_calls": [
            {
                "id": "call_0_0",
                "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": "python3 -m pytest -q"})},
            }
        ],
    }
    assert completion.finish_reason == "tool_calls"
    assert logged_steps(call_log) == [0]


@pytest.mark.asyncio
async def test_the_step_is_the_number_of_assistant_messages_so_far(call_log: Path) -> None:
    """Each reply fed back moves the playbook one step; step 1 has two tool calls, step 2 submits."""
    spec = scripted("three-steps.yaml")
    first = await complete(spec, TASK, TOOLS, BudgetCaps(), Spend())
    messages = after(TASK, first.message)
    second = await complete(spec, messages, TOOLS, BudgetCaps(), Spend())
    assert [c["id"] for c in second.tool_calls] == ["call_1_0", "call_1_1"]
    assert [c["function"]["name"] for c in second.tool_calls] == ["str_replace", "bash"]
    assert second.message["content"] is None
    third = await complete(spec, after(messages, second.message), TOOLS, BudgetCaps(), Spend())
    assert third.text == "Done."
    assert json.loads(third.tool_calls[0]["function"]["arguments"]) == {"summary": "Guard against division by zero"}
    assert logged_steps(call_log) == [0, 1, 2]


@pytest.mark.asyncio
async def test_a_repeated_call_returns_the_same_answer(call_log: Path) -> None:
    """Stateless: a call retried after a crash (same messages) gets the very same step again."""
    spec = scripted("three-steps.yaml")
    messages = after(TASK, (await complete(spec, TASK, TOOLS, BudgetCaps(), Spend())).message)
    once = await complete(spec, messages, TOOLS, BudgetCaps(), Spend())
    again = await complete(spec, messages, TOOLS, BudgetCaps(), Spend())
    assert once.message == again.message
    assert logged_steps(call_log) == [0, 1, 1]


@pytest.mark.asyncio
async def test_usage_is_reported_like_a_real_models(call_log: Path) -> None:
    """Prompt tokens are what the budget counted, completion tokens are counted from the answer, cost is 0."""
    spec = scripted("three-steps.yaml")
    completion = await complete(spec, TASK, TOOLS, BudgetCaps(), Spend(steps=3))
    usage = completion.usage
    assert usage.tokens_in == count_prompt_tokens(spec.name, TASK, TOOLS)
    assert 0 < usage.tokens_out < 100
    assert (usage.steps, usage.cost_usd) == (1, 0.0)
    assert usage.model_seconds >= 0
    assert completion.max_tokens == spec.max_output_tokens


@pytest.mark.asyncio
async def test_past_the_last_step_the_model_submits(call_log: Path) -> None:
    """A conversation longer than the playbook ends with submit('playbook exhausted') rather than looping."""
    spec = scripted("one-step.json")
    messages = after(TASK, (await complete(spec, TASK, TOOLS, BudgetCaps(), Spend())).message)
    extra = await complete(spec, messages, TOOLS, BudgetCaps(), Spend())
    assert extra.tool_calls == [
        {
            "id": "call_1_0",
            "type": "function",
            "function": {"name": "submit", "arguments": '{"summary": "playbook exhausted"}'},
        }
    ]


@pytest.mark.asyncio
async def test_exhausting_the_budget_raises_without_calling_the_model(call_log: Path) -> None:
    """With the step cap reached, BudgetExhausted is raised and the model never sees the call."""
    spec = scripted("three-steps.yaml")
    with pytest.raises(BudgetExhausted, match=r"^step cap: 5 of 5 model calls used \(tokens 1,000 / 200,000"):
        await complete(spec, TASK, TOOLS, BudgetCaps(steps=5), Spend(steps=5, tokens_in=1_000))
    with pytest.raises(BudgetExhausted, match=r"^token cap: "):
        await complete(spec, TASK, TOOLS, BudgetCaps(tokens=300), Spend())
    assert logged_steps(call_log) == []


@pytest.mark.asyncio
async def test_max_tokens_reaching_the_model_is_clamped_by_the_budget(call_log: Path) -> None:
    """The output limit passed to the model is what the token cap leaves after the prompt."""
    spec = scripted("three-steps.yaml")
    prompt = count_prompt_tokens(spec.name, TASK, TOOLS)
    completion = await complete(spec, TASK, TOOLS, BudgetCaps(tokens=prompt + 1_000), Spend())
    assert completion.max_tokens == 1_000


@pytest.mark.asyncio
async def test_a_missing_playbook_is_a_playbook_error(tmp_path: Path, call_log: Path) -> None:
    """A playbook deleted after submission surfaces as PlaybookError naming the file, not as a litellm error."""
    missing = tmp_path / "gone.yaml"
    spec = ModelSpec(name="scripted/gone", api_base=str(missing), input_price_per_mtok=0, output_price_per_mtok=0)
    with pytest.raises(PlaybookError) as caught:
        await complete(spec, TASK, TOOLS, BudgetCaps(), Spend())
    assert str(caught.value) == f"playbook {missing} does not exist"
    assert caught.value.permanent
    assert logged_steps(call_log) == []


def test_an_invalid_playbook_is_refused_in_one_line() -> None:
    """A tool call entry with two keys is named by its place in the file."""
    path = PLAYBOOKS / "two-keys.yaml"
    with pytest.raises(PlaybookError) as caught:
        resolve_model_spec("scripted", Settings(), playbook=path)
    assert str(caught.value) == (
        f"playbook {path}: steps[0].tool_calls: entry 0 must be a one-key mapping {{tool_name: {{arguments}}}}"
    )


@pytest.mark.asyncio
async def test_delay_s_makes_the_model_slow(call_log: Path) -> None:
    """delay_s sleeps before answering (tests use it to kill a worker mid-call); the time is in the usage."""
    completion = await complete(scripted("slow.yaml"), TASK, TOOLS, BudgetCaps(), Spend())
    assert completion.usage.model_seconds >= 0.3
    assert completion.text == "Thinking slowly."


def test_litellm_completion_answers_from_the_playbook_synchronously(call_log: Path) -> None:
    """Plain litellm.completion(model='scripted/...', api_base=<playbook>) returns a ModelResponse with usage."""
    import litellm

    response = litellm.completion(
        model="scripted/anything", api_base=str(PLAYBOOKS / "three-steps.yaml"), messages=TASK, tools=TOOLS
    )
    assert isinstance(response, litellm.ModelResponse)
    message = response.choices[0].message
    assert message.tool_calls[0].id == "call_0_0"
    assert response.usage.prompt_tokens > 0
    assert logged_steps(call_log) == [0]


# -- complete() against a real provider protocol: a local OpenAI-compatible server


class _FakeOpenAI(BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if self.status == 200:
            payload: dict[str, Any] = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_abc",
                                    "type": "function",
                                    "function": {"name": "bash", "arguments": '{"command": "ls"}'},
                                }
                            ],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 1_000, "completion_tokens": 200, "total_tokens": 1_200},
            }
        else:
            payload = {"error": {"message": f"status {self.status}", "type": "error", "code": None}}
        data = json.dumps(payload).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[type[_FakeOpenAI], str]]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAI.status, _FakeOpenAI.requests = 200, []
    yield _FakeOpenAI, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.asyncio
async def test_a_real_provider_call_is_settled_at_the_models_price(
    openai_server: tuple[type[_FakeOpenAI], str],
) -> None:
    """Through litellm's OpenAI provider: max_tokens and tools are sent, real usage is priced at gpt-4o's rates."""
    fake, base = openai_server
    spec = resolve_model_spec("openai/gpt-4o", Settings(), playbook=None).model_copy(update={"api_base": base})
    completion = await complete(spec, TASK, TOOLS, BudgetCaps(tokens=10_000), Spend())
    assert fake.requests[0]["tools"] == TOOLS
    assert fake.requests[0]["max_tokens"] == completion.max_tokens <= 10_000
    assert completion.tool_calls[0]["id"] == "call_abc"
    assert (completion.usage.tokens_in, completion.usage.tokens_out) == (1_000, 200)
    assert completion.usage.cost_usd == pytest.approx(1_000 * 2.5e-6 + 200 * 1e-5)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "error", "permanent"),
    [
        (401, ModelRequestRefused, True),
        (400, ModelRequestRefused, True),
        (429, ModelError, False),
        (503, ModelError, False),
    ],
)
async def test_provider_errors_say_whether_a_retry_can_help(
    openai_server: tuple[type[_FakeOpenAI], str], status: int, error: type[ModelError], permanent: bool
) -> None:
    """Refusals (401, 400) are permanent; rate limits and server errors are retryable; one line each."""
    fake, base = openai_server
    fake.status = status
    spec = resolve_model_spec("openai/gpt-4o", Settings(), playbook=None).model_copy(update={"api_base": base})
    with pytest.raises(error) as caught:
        await complete(spec, TASK, TOOLS, BudgetCaps(), Spend())
    assert type(caught.value) is error
    assert caught.value.permanent is permanent
    assert "\n" not in str(caught.value) and str(caught.value).startswith("model openai/gpt-4o ")
    assert len(fake.requests) == 1  # litellm did not retry on its own
