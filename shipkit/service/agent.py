"""What an agent author writes: :class:`AgentSpec` (built by ``@service.agent``) and :class:`AgentContext`.

An agent is an async generator speaking the Synadia Agent Protocol for NATS::

    @service.agent("assistant", owner="acme", description="answers questions")
    async def assistant(prompt: AgentPrompt, ctx: AgentContext) -> AsyncIterator[str]:
        await ctx.status("thinking")
        city = await ctx.ask("Which city?", timeout_s=60)
        yield f"Sunny in {city}."

Every yielded string is a ``response`` chunk; the host sends the leading ack, keep-alives,
the terminator and the error frames (see :mod:`shipkit.service.agent_host`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.errors import TimeoutError as NatsPyTimeoutError
from nats.nuid import NUID

from shipkit.errors import ConfigurationError, NatsTimeoutError
from shipkit.service.agent_protocol import AgentPrompt, AgentSubjects, chunk, parse_prompt, parse_size, query_chunk
from shipkit.service.codec import Signature, inspect_handler
from shipkit.service.context import Context
from shipkit.service.host import Host

__all__ = ["AgentContext", "AgentSpec", "build_agent_spec"]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent a service hosts, validated at registration.

    Attributes:
        subjects: agent name, owner and session (its subjects derive from them).
        func: the async generator.
        signature: how to call it (an :class:`AgentPrompt` payload, an optional context).
        description: shown by discovery.
        attachments_ok: whether prompts may carry attachments (advertised, and enforced).
        max_payload: the largest prompt accepted in bytes (None: the server's limit).
        keepalive_s: a silent stream sends an ``ack`` status this often.
        heartbeat_s: heartbeats go out this often (whole seconds, as the protocol declares).
        max_concurrency: prompts handled at once by this instance.
    """

    subjects: AgentSubjects
    func: Callable[..., AsyncGenerator[Any, None]]
    signature: Signature
    description: str
    attachments_ok: bool = True
    max_payload: int | None = None
    keepalive_s: float = 15.0
    heartbeat_s: int = 30
    max_concurrency: int = 64


def build_agent_spec(
    name: str,
    func: Callable[..., Any],
    *,
    owner: str,
    session: str = "default",
    description: str = "",
    attachments_ok: bool = True,
    max_payload: int | str | None = None,
    keepalive_s: float = 15.0,
    heartbeat_s: int = 30,
    max_concurrency: int = 64,
) -> AgentSpec:
    """Validate an agent declaration (see ``Service.agent``); ConfigurationError naming the function."""
    qualname = getattr(func, "__qualname__", repr(func))
    if not inspect.isasyncgenfunction(func):
        raise ConfigurationError(f"agent {qualname} must be an async generator (`async def` with `yield`)")
    signature = inspect_handler(func, context_type=AgentContext, what="agent", allow_stream=True)
    if signature.payload_param is None:
        raise ConfigurationError(f"agent {qualname} must take the prompt (`prompt: AgentPrompt`)")
    if not isinstance(heartbeat_s, int) or heartbeat_s < 1:
        raise ConfigurationError(f"agent {name!r}: heartbeat_s must be a whole number of seconds >= 1")
    if keepalive_s <= 0 or max_concurrency < 1:
        raise ConfigurationError(f"agent {name!r}: keepalive_s must be > 0 and max_concurrency >= 1")
    size = parse_size(max_payload) if isinstance(max_payload, str) else max_payload
    if size is not None and size < 1:
        raise ConfigurationError(f"agent {name!r}: max_payload must be positive")
    return AgentSpec(
        subjects=AgentSubjects(name, owner, session),
        func=func,
        signature=signature,
        description=description or (inspect.getdoc(func) or f"{name} agent").split("\n", 1)[0],
        attachments_ok=attachments_ok,
        max_payload=size,
        keepalive_s=keepalive_s,
        heartbeat_s=heartbeat_s,
        max_concurrency=max_concurrency,
    )


class AgentContext(Context):
    """A :class:`Context` for one prompt, plus the protocol's mid-stream moves.

    Attributes:
        agent: the agent's name; ``owner`` and ``session`` likewise.
    """

    __slots__ = ("_send", "agent", "owner", "session")

    def __init__(
        self,
        host: Host,
        subject: str,
        headers: dict[str, str] | None,
        reply: str | None,
        *,
        subjects: AgentSubjects,
        send: Callable[[bytes], Awaitable[None]],
    ) -> None:
        super().__init__(host, subject, headers, reply)
        self.agent = subjects.agent
        self.owner = subjects.owner
        self.session = subjects.session
        self._send = send

    async def status(self, text: str) -> None:
        """Send a ``status`` chunk (progress the caller may show, e.g. dimmed)."""
        await self._send(chunk("status", text))

    async def ask(self, question: str, *, timeout_s: float = 60.0) -> str:
        """Ask the caller a question mid-stream (a ``query`` chunk) and wait for the answer's text.

        Use :meth:`ask_prompt` for the answer's attachments too.

        Raises:
            NatsTimeoutError: no answer within ``timeout_s``.
            ServiceError: the answer is not a valid envelope (400).
        """
        return (await self.ask_prompt(question, timeout_s=timeout_s)).text

    async def ask_prompt(self, question: str, *, timeout_s: float = 60.0) -> AgentPrompt:
        """Like :meth:`ask`, returning the whole answer (text, attachments, extra fields)."""
        nc = self.host.client
        inbox = nc.new_inbox()
        subscription = await nc.subscribe(inbox)
        try:
            await self._send(query_chunk(NUID().next().decode(), inbox, question))
            try:
                msg = await subscription.next_msg(timeout=timeout_s)
            except (TimeoutError, NatsPyTimeoutError) as exc:
                raise NatsTimeoutError(f"agent {self.agent!r}: no answer to its question in {timeout_s}s") from exc
        finally:
            if not nc.is_closed:
                await subscription.unsubscribe()
        return parse_prompt(msg.data, "query answer")
