"""The answering LLM: any OpenAI-compatible chat endpoint, through llama-index's OpenAILike.

Transport failures become ragsvc errors that name the LLM, so a client can tell them from its own mistakes.
"""

from __future__ import annotations

import openai
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from indexes.errors import RagsvcError
from ragsvc.settings import Settings


class LLMUnavailable(RagsvcError):
    code = "llm_unavailable"


class LLMTimeout(RagsvcError):
    code = "llm_timeout"


class LLMFailed(RagsvcError):
    code = "llm_error"


class AnswerLLM:
    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.llm_base_url
        self.context_window = settings.llm_context_window
        self.max_tokens = settings.llm_max_tokens
        self._llm = OpenAILike(
            model=settings.llm_model,
            api_base=settings.llm_base_url,
            api_key=settings.llm_api_key,
            is_chat_model=True,
            context_window=settings.llm_context_window,
            max_tokens=settings.llm_max_tokens,
            temperature=0.0,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_retries,
        )

    def chat(self, system: str, user: str) -> str:
        messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]
        try:
            response = self._llm.chat(messages)
        except openai.APITimeoutError as exc:
            raise LLMTimeout(f"the LLM at {self.base_url} did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailable(
                f"the LLM at {self.base_url} is unreachable: {exc.__cause__ or exc}"
            ) from exc
        except openai.APIStatusError as exc:
            raise LLMFailed(f"the LLM at {self.base_url} answered {exc.status_code}: {exc.message}") from exc
        return (response.message.content or "").strip()
