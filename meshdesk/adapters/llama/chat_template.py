"""The model's chat template, or a fallback for GGUFs without one, as a llama-cpp-python formatter.

Whether the template takes tools is found once, when the model loads (`tool_prompt`); what a
request's messages, tools and tool results become is `tool_prompt.chat_input`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from meshdesk.adapters.llama.tool_prompt import chat_input, template_takes_tools


@dataclass(frozen=True)
class FallbackTemplate:
    """A chat template for GGUFs that carry none (the bundled Gemma 3 270M is one)."""

    template: str
    stop: tuple[str, ...]


GEMMA_TEMPLATE = FallbackTemplate(
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
    ("<end_of_turn>",),
)
CHATML_TEMPLATE = FallbackTemplate(
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    ("<|im_end|>",),
)


def fallback_template(architecture: str) -> FallbackTemplate:
    return GEMMA_TEMPLATE if architecture.startswith("gemma") else CHATML_TEMPLATE


@dataclass(frozen=True)
class ChatFormat:
    formatter: object
    extra_stop: tuple[str, ...]
    takes_tools: bool = False  # the template reads `tools`: they go to it, not a system prompt

    def render(self, request):
        """llama-cpp-python's formatted prompt (ending with the open assistant turn)."""
        prepared = chat_input(request, self.takes_tools)
        return self.formatter(messages=prepared.messages, **prepared.extra)


def chat_format(llama) -> ChatFormat:
    """The GGUF's own chat template, else a fallback for its architecture."""
    template = llama.metadata.get("tokenizer.chat_template")
    extra_stop: tuple[str, ...] = ()
    if template is None:
        fallback = fallback_template(llama.metadata.get("general.architecture", ""))
        template, extra_stop = fallback.template, fallback.stop
    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )
    return ChatFormat(formatter, extra_stop, template_takes_tools(template))
