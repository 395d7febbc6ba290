"""The checkpoint's tokenizer, loaded with ``transformers`` without running remote code.

A folder whose ``tokenizer_config.json`` names a tokenizer class from the checkpoint's own Python
files (``auto_map``) is never trusted: ``trust_remote_code=False`` always (so transformers never
asks on the terminal whether to run it), and a family whose tokenizer is a plain transformers class
under a custom name passes that class (``tokenizer_class="Qwen2TokenizerFast"``). A class that
exists only in the checkpoint's code is refused with a ``ValueError`` that says what to do. A processor-level chat template
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
        tokenizer = cls.from_pretrained(str(folder), trust_remote_code=False)
    else:
        refuse_remote_class(folder, transformers)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        except ValueError as err:
            if "trust_remote_code" not in str(err):
                raise
            raise ValueError(remote_code_message(folder, "a class from the checkpoint's own code")) from None
    if not getattr(tokenizer, "chat_template", None):  # a processor-level template (Qwen3-Omni ships chat_template.json)
        template = folder / "chat_template.json"
        if template.exists():
            tokenizer.chat_template = json.loads(template.read_text()).get("chat_template")
        elif (folder / "chat_template.jinja").exists():
            tokenizer.chat_template = (folder / "chat_template.jinja").read_text()
    return tokenizer


def refuse_remote_class(folder: Path, transformers: Any) -> None:
    """Raise before transformers is asked when ``tokenizer_config.json`` names a tokenizer class
    that only the checkpoint's own code (``auto_map``) defines."""
    config_file = folder / "tokenizer_config.json"
    if not config_file.exists():
        return
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file} is not valid JSON ({err}); fix it or download it again") from None
    name = config.get("tokenizer_class") if isinstance(config, dict) else None
    remote = (config.get("auto_map") or {}) if isinstance(config, dict) else {}
    if isinstance(name, str) and remote and getattr(transformers, name, None) is None:
        raise ValueError(remote_code_message(folder, f"tokenizer_class {name!r}, defined by the checkpoint's own code "
                                                     f"(auto_map {remote.get('AutoTokenizer', remote)})"))


def remote_code_message(folder: Path, what: str) -> str:
    return (
        f"{folder / 'tokenizer_config.json'} names {what}; hooked_avllm never runs a checkpoint's code "
        "(trust_remote_code=False). Load the model with load_tokenizer=False and set model.tokenizer to a tokenizer "
        "you trust, or set tokenizer_class in tokenizer_config.json to a transformers class "
        "(e.g. 'PreTrainedTokenizerFast' for a folder with tokenizer.json)"
    )


__all__ = ["load_tokenizer"]
