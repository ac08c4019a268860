"""Glossary terms that notebook 01 uses and other notebooks define (r0102 round 15, D9): the variance model and the
needle, each in a line, the model's numbers read from its configuration (``flexfix.integration.engine``)."""

from __future__ import annotations

from flexfix.edition.narrative import markdown


def glossary(terms_before: dict[str, str]) -> str:
    """The glossary as Markdown, one bullet per term: ``terms_before`` (:data:`flexfix.edition.glossary.TERMS`), then
    these."""
    return markdown("\n".join(f"* **{t}**: {meaning}" for t, meaning in {**terms_before, **terms()}.items()))


def terms() -> dict[str, str]:
    from flexfix.integration.engine import LLAMA_CONFIGS

    tiny, big = LLAMA_CONFIGS["tiny"], LLAMA_CONFIGS["variance"]
    return {
        "tiny model / variance model": (
            "the two Llama models this series writes at run time with seeded weights: the *tiny* one "
            f"({tiny['num_hidden_layers']} layers, hidden size {tiny['hidden_size']}) runs this notebook's engines and "
            f"notebook 02's checks; the *variance* model, larger ({big['num_hidden_layers']} layers, hidden size "
            f"{big['hidden_size']}), is where notebook 04 saw engines with `VLLM_BATCH_INVARIANT=0` vary (even the "
            "same request alone a second time: how much of it the batch causes, 04 did not establish) and where "
            "notebook 02 measures the workarounds' throughput (notebook 02's model table prints both configurations "
            "whole)."
        ),
        "needle": (
            "notebook 04's fixed request, placed first, in the middle or last of a batch of random requests: its "
            "output in the batch is compared with its output alone."
        ),
    }
