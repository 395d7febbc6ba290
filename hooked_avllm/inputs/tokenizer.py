"""The checkpoint's tokenizer, loaded with ``transformers`` without running remote code.

A folder whose ``tokenizer_config.json`` names a tokenizer class from the checkpoint's own Python
files (``auto_map``) is never trusted: ``trust_remote_code=False`` always, and a family whose
tokenizer is a plain transformers class under a custom name passes that class
(``tokenizer_class="Qwen2TokenizerFast"``). A processor-level chat template
(``chat_template.json`` or ``chat_template.jinja``) is attached when the tokenizer has none.

Example:
    >>> from pathlib import Path
    >>> load_tokenizer(Path("/nonexistent")) is None
    True
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def load_tokenizer(folder: Path, tokenizer_class: str | None = None) -> Any:
    """The tokenizer of checkpoint ``folder`` (``None`` if it has none, or transformers is missing)."""
    folder = Path(folder)
    if not any((folder / n).exists() for n in TOKENIZER_FILES):
        return None
    try:
        import transformers
    except ImportError:
        warnings.warn("the checkpoint has a tokenizer but transformers is not installed; model.tokenizer is None")
        return None
    if tokenizer_class is not None:
        cls = getattr(transformers, tokenizer_class, None)
        if cls is None:
            raise ValueError(f"transformers has no tokenizer class {tokenizer_class!r}")
        tokenizer = cls.from_pretrained(str(folder))
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):  # a processor-level template (Qwen3-Omni ships chat_template.json)
        template = folder / "chat_template.json"
        if template.exists():
            tokenizer.chat_template = json.loads(template.read_text()).get("chat_template")
        elif (folder / "chat_template.jinja").exists():
            tokenizer.chat_template = (folder / "chat_template.jinja").read_text()
    return tokenizer


__all__ = ["load_tokenizer"]
