"""A tokenizer for the project's Llama checkpoints, trained here (no download), so that ``vllm serve`` can load them.

The engine-level experiments pass token ids and skip the tokenizer; ``vllm serve`` loads one.  This
module trains a byte-level BPE (the ``tokenizers`` library) on a seeded synthetic corpus, with exactly
the vocabulary size of the model's ``config.json`` and the config's ``bos_token_id`` / ``eos_token_id``
as its ``<s>`` / ``</s>``, and saves it as a Hugging Face fast tokenizer next to the weights::

    from flexfix.integration.engine import write_llama
    from flexfix.integration.local_tokenizer import write_tokenizer

    write_tokenizer(write_llama("/tmp/llama-tiny", "tiny"))   # vllm serve /tmp/llama-tiny loads it

The corpus is generated from a seeded random generator (pseudo-words, digits, punctuation), so the
tokenizer is the same on every machine and Python version.  Byte-level: any text round-trips.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

__all__ = ["SPECIAL_NAMES", "synthetic_corpus", "build_tokenizer", "write_tokenizer"]

# Llama's names; which id each gets comes from the model's config (LlamaConfig: bos 1, eos 2).
SPECIAL_NAMES = {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}


def synthetic_corpus(seed: int = 0, lines: int = 30_000) -> list[str]:
    """Seeded pseudo-text: words made of syllables with a Zipf-like frequency, numbers, punctuation."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels] + [
        c + v + e for c in consonants[:8] for v in vowels for e in "nrst"
    ]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(60_000)]
    text = []
    for _ in range(lines):
        words = [
            lexicon[min(int(rng.paretovariate(1.1)) - 1, len(lexicon) - 1)]
            if rng.random() < 0.5
            else rng.choice(lexicon)
            for _ in range(12)
        ]
        text.append(" ".join(words) + rng.choice(".,;:!?") + " " + str(rng.randrange(10_000)))
    return text


def _specials(bos_id: int, eos_id: int) -> list[str]:
    """Special tokens in id order, so that bos and eos land on the config's ids (the rest: unk, pads)."""
    if bos_id == eos_id or min(bos_id, eos_id) < 0:
        raise ValueError(f"bos_token_id and eos_token_id must be distinct and >= 0, got {bos_id} and {eos_id}")
    names = []
    for i in range(max(bos_id, eos_id) + 1):
        if i == bos_id:
            names.append(SPECIAL_NAMES["bos"])
        elif i == eos_id:
            names.append(SPECIAL_NAMES["eos"])
        elif SPECIAL_NAMES["unk"] not in names:
            names.append(SPECIAL_NAMES["unk"])
        else:
            names.append(f"<pad_{i}>")
    if SPECIAL_NAMES["unk"] not in names:
        names.append(SPECIAL_NAMES["unk"])
    return names


def build_tokenizer(vocab_size: int, bos_id: int = 1, eos_id: int = 2, seed: int = 0):
    """A byte-level BPE ``tokenizers.Tokenizer`` with exactly ``vocab_size`` tokens, ``<s>`` at
    ``bos_id``, ``</s>`` at ``eos_id``; encoding adds ``<s>`` in front, as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = _specials(bos_id, eos_id)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(specials) + len(alphabet):
        raise ValueError(f"vocab_size must be at least {len(specials) + len(alphabet)} for a byte-level BPE")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(synthetic_corpus(seed), trainer)
    short = vocab_size - tok.get_vocab_size()
    if short > 0:  # the corpus ran out of merges: fill up with plain tokens so the ids match the model
        tok.add_tokens([f"<extra_{i}>" for i in range(short)])
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens, expected {vocab_size}")
    bos = SPECIAL_NAMES["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    for name, want in ((SPECIAL_NAMES["bos"], bos_id), (SPECIAL_NAMES["eos"], eos_id)):
        if tok.token_to_id(name) != want:
            raise RuntimeError(f"{name} has id {tok.token_to_id(name)}, expected {want}")
    return tok


def write_tokenizer(model_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write a fast tokenizer into ``model_dir`` matching its ``config.json`` (vocab_size, bos/eos ids).

    Files: ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json`` (what
    ``AutoTokenizer.from_pretrained`` and ``vllm serve`` read).  Does nothing when a tokenizer of the
    right size is already there."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir} has no config.json: write the model first") from None
    vocab_size = int(config["vocab_size"])
    bos_id, eos_id = int(config.get("bos_token_id", 1)), int(config.get("eos_token_id", 2))
    existing = model_dir / "tokenizer.json"
    if existing.exists() and (model_dir / "tokenizer_config.json").exists():
        from tokenizers import Tokenizer

        if Tokenizer.from_file(str(existing)).get_vocab_size() == vocab_size:
            return model_dir
    from transformers import PreTrainedTokenizerFast

    tok = build_tokenizer(vocab_size, bos_id, eos_id, seed=seed)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_NAMES["bos"],
        eos_token=SPECIAL_NAMES["eos"],
        unk_token=SPECIAL_NAMES["unk"],
        model_max_length=int(config.get("max_position_embeddings", 2048)),
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(model_dir))
    return model_dir
