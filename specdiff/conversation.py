"""A chat as one running token list: each turn's prompt ids extend the last turn's ids, so the
verifier's prefill reuses the target's KV cache across turns (chat, multi-turn benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

ROLES = ("system", "user", "assistant")


class ConversationFileError(ValueError):
    pass


class Conversation:
    """Messages and the ids they render to. Uses the tokenizer's chat template when it has one, plain
    continuation (turns appended to the text) otherwise. `system_prompt` opens every conversation
    (None: the template's own default, if any)."""

    def __init__(self, tokenizer, max_prompt_tokens: int | None = None, use_chat_template: bool = True,
                 system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens  # older tokens are dropped beyond this
        self.templated = use_chat_template and bool(getattr(tokenizer, "chat_template", None))
        if system_prompt is not None and not self.templated:
            raise ValueError("a system prompt needs a tokenizer with a chat template (this one has none, or "
                             "plain continuation was asked for)")
        self.system_prompt = system_prompt
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [] if self.system_prompt is None else [
            {"role": "system", "content": self.system_prompt}]
        self.token_ids: list[int] = []
        self.dropped_tokens = 0  # by the last prompt_ids(), to fit max_prompt_tokens

    def prompt_ids(self, text: str) -> list[int]:
        """The ids to generate the reply to `text` from."""
        self.messages.append({"role": "user", "content": text})
        if self.templated:
            ids = self._extend(self._render(add_generation_prompt=True))
        elif self.token_ids:
            separator = "" if self._decode(self.token_ids).endswith("\n") else "\n"
            ids = self.token_ids + self._encode(separator + text)
        else:
            ids = self.tokenizer(text)["input_ids"]
        self.dropped_tokens = 0
        if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
            self.dropped_tokens = len(ids) - self.max_prompt_tokens
            ids = ids[-self.max_prompt_tokens:]
        return ids

    def add_reply(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        """Record the reply generated from `prompt_ids`; returns its text."""
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        self.token_ids = list(prompt_ids) + list(new_ids)
        self.messages.append({"role": "assistant", "content": text})
        return text

    # --- saving and loading ------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """The messages as JSON: {"messages": [{"role", "content"}, ...]}."""
        Path(path).write_text(json.dumps({"messages": self.messages}, indent=1, ensure_ascii=False) + "\n",
                              encoding="utf-8")

    def load(self, path: Path) -> None:
        """Continue the conversation saved at `path` (ConversationFileError names what is wrong)."""
        self.load_messages(read_messages(Path(path)))

    def load_messages(self, messages: list[dict]) -> None:
        self.reset()
        self.messages = [dict(m) for m in messages]
        if self.templated:
            self.token_ids = self._encode(self._render(add_generation_prompt=False)) if messages else []
        else:
            self.token_ids = self._encode("\n".join(m["content"] for m in messages)) if messages else []

    # --- helpers -----------------------------------------------------------------------------

    def _render(self, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(self.messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _extend(self, rendered: str) -> list[int]:
        """Ids of `rendered`, reusing the ids so far when the text so far is its prefix (cache reuse)."""
        so_far = self._decode(self.token_ids)
        if self.token_ids and rendered.startswith(so_far):
            return self.token_ids + self._encode(rendered[len(so_far):])
        return self._encode(rendered)  # the template re-renders history differently: start over

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def read_messages(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversationFileError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConversationFileError(f"{path}: not a JSON file ({error})") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list):
        raise ConversationFileError(f'{path}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
    for number, message in enumerate(messages, start=1):
        if not (isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)):
            raise ConversationFileError(f"{path}: message {number} must be an object with a role ({', '.join(ROLES)}) "
                                        "and a string content")
    return messages


def max_prompt_tokens(model, max_new_tokens: int) -> int | None:
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return None if limit is None else max(1, limit - max_new_tokens)
