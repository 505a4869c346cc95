"""The Cheers tokenizer: Qwen2 byte-level BPE plus the five Cheers tokens.

*Length*: over 400 lines because it is one class whose loading, encoding and chat template all
apply the special-token rules below; kept in one file so that those rules are read in one place.

The released checkpoint uses the Qwen2.5 tokenizer unchanged and adds ``<image>``, ``<image_gen>``,
``<im_start>``, ``<im_end>`` and ``<no_mean>`` (ids 151665-151669) as special tokens. This module
rebuilds that tokenizer with the Hugging Face ``tokenizers`` library (no ``transformers`` needed),
from either a ``tokenizer.json`` or the ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json``
triple, and renders the Qwen ChatML template in plain Python.

Special-token strings typed by a user (``<|im_end|>``, ``<image>``…) are plain text: :meth:`encode`
tokenises them as ordinary bytes unless the caller names them in ``allowed_special``, and
:meth:`CheersTokenizer.apply_chat_template` with ``tokenize=True`` produces control tokens only
for the template itself. Otherwise a prompt could close its own turn and open an assistant turn
(prompt injection), or claim image slots that have no image.
"""

from __future__ import annotations

import json
import operator
import os
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from tokenizers import AddedToken, Tokenizer, models

from cheers._files import staged_files
from cheers.errors import CheckpointError, PromptError

__all__ = [
    "CHEERS_TOKENS",
    "DATA_PLACEHOLDERS",
    "DEFAULT_SYSTEM_PROMPT",
    "IMAGE_GEN_SLOT_TEXT",
    "IMAGE_GEN_TOKEN",
    "IMAGE_SLOT_TEXT",
    "IMAGE_TOKEN",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "NO_MEAN_TOKEN",
    "QWEN2_CHAT_TEMPLATE",
    "QWEN2_SPLIT_PATTERN",
    "ChatText",
    "CheersTokenizer",
    "SpecialTokens",
]

IMAGE_TOKEN = "<image>"
IMAGE_GEN_TOKEN = "<image_gen>"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
NO_MEAN_TOKEN = "<no_mean>"

#: How a prompt marks where an image goes; the only special-token text a prompt may contain, and
#: only where the caller asks for image placeholders.
IMAGE_SLOT_TEXT = f"{IM_START_TOKEN}{IMAGE_TOKEN}{IM_END_TOKEN}"
#: How an assistant turn of the released training data marks an image to generate.
IMAGE_GEN_SLOT_TEXT = f"{IM_START_TOKEN}{IMAGE_GEN_TOKEN}{IM_END_TOKEN}"
#: The special-token text the released JSONL training format writes in its turns.
DATA_PLACEHOLDERS: tuple[str, ...] = (IMAGE_SLOT_TEXT, IMAGE_GEN_SLOT_TEXT)

#: The Cheers tokens with the ids the released embedding table was trained with, in the order
#: the reference adds them (the order is what fixes the ids when they are appended).
CHEERS_TOKENS: tuple[tuple[str, int], ...] = (
    (IMAGE_TOKEN, 151665),
    (IMAGE_GEN_TOKEN, 151666),
    (IM_START_TOKEN, 151667),
    (IM_END_TOKEN, 151668),
    (NO_MEAN_TOKEN, 151669),
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

#: Qwen2's pre-tokenisation regex (digits split one by one, letters grouped, etc.).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: The Jinja template of the released ``tokenizer_config.json``; :meth:`apply_chat_template`
#: renders exactly this in Python, and :meth:`CheersTokenizer.save` writes it for HF tools.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CHAT_ROLES = ("system", "user", "assistant")
_CHAT_START, _CHAT_END = "<|im_start|>", "<|im_end|>"
_ACCEPTED_FILES = "tokenizer.json, or vocab.json + merges.txt + tokenizer_config.json"

# Written into a saved tokenizer_config.json when the source folder had none; these are the
# released Qwen2 values, so the folder loads in transformers as a Qwen2Tokenizer.
_DEFAULT_CONFIG: dict[str, Any] = {
    "add_bos_token": False,
    "add_prefix_space": False,
    "bos_token": None,
    "clean_up_tokenization_spaces": False,
    "eos_token": "<|im_end|>",
    "errors": "replace",
    "model_max_length": 131072,
    "pad_token": "<|endoftext|>",
    "split_special_tokens": False,
    "tokenizer_class": "Qwen2Tokenizer",
    "unk_token": None,
}

_BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": False,
    "use_regex": False,
}

# Everything of Qwen2's tokenizer.json except the vocabulary: NFC, then Qwen2's regex split, then
# byte-to-symbol mapping. ByteLevel's own GPT-2 regex stays off, or it would split the pieces a
# second time; no BOS/EOS is added (the post-processor only adjusts offsets).
_QWEN2_PIPELINE: dict[str, Any] = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": QWEN2_SPLIT_PATTERN},
                "behavior": "Isolated",
                "invert": False,
            },
            _BYTE_LEVEL,
        ],
    },
    "post_processor": _BYTE_LEVEL,
    "decoder": _BYTE_LEVEL,
    "model": {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": "",
        "end_of_word_suffix": "",
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "vocab": {},
        "merges": [],
    },
}


class ChatText(str):
    """Chat text rendered by :meth:`CheersTokenizer.apply_chat_template`, which remembers its parts.

    It is an ordinary ``str`` (print it, compare it), but :meth:`CheersTokenizer.encode` given one
    unchanged tokenises its template parts as control tokens and its message text as plain text
    (``<im_start><image><im_end>`` in a message being an image slot), exactly as
    ``apply_chat_template(..., tokenize=True, image_placeholders=True)`` does. So code that
    encodes the rendered text stays safe against special-token text in messages. Any edit of the
    string (slicing, concatenation) gives a plain ``str``, which encodes as plain text throughout.
    """

    _pieces: tuple[tuple[bool, str], ...] = ()


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens the model code needs, read from the loaded vocabulary."""

    im_start_chat: int = 151644  # <|im_start|>, opens a ChatML turn
    eos: int = 151645  # <|im_end|>, ends a turn and stops generation
    pad: int = 151643  # <|endoftext|>
    image: int = 151665  # <image>, replaced by the image's LLM tokens
    image_gen: int = 151666  # <image_gen>
    im_start: int = 151667  # <im_start>, opens an image block
    im_end: int = 151668  # <im_end>, closes an image block
    no_mean: int = 151669  # <no_mean>, fills the unconditional prompt

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> SpecialTokens:
        """Look every special token up in ``tokenizer``; raise if one is missing."""
        names = {
            "im_start_chat": "<|im_start|>",
            "eos": "<|im_end|>",
            "pad": "<|endoftext|>",
            "image": IMAGE_TOKEN,
            "image_gen": IMAGE_GEN_TOKEN,
            "im_start": IM_START_TOKEN,
            "im_end": IM_END_TOKEN,
            "no_mean": NO_MEAN_TOKEN,
        }
        ids: dict[str, int] = {}
        for field, token in names.items():
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise CheckpointError(
                    f"The tokenizer has no {token!r} token, which Cheers needs. Load the "
                    "tokenizer files of the released checkpoint (a Qwen2 tokenizer)."
                )
            ids[field] = token_id
        return cls(**ids)


class CheersTokenizer:
    """Qwen2 byte-level BPE with the Cheers tokens, plus the ChatML template.

    Build it with :meth:`from_folder`; wrapping an existing ``tokenizers.Tokenizer`` directly is
    also possible (the Cheers tokens are added or verified either way).
    """

    def __init__(self, tokenizer: Tokenizer, config: Mapping[str, Any] | None = None) -> None:
        """Wrap ``tokenizer``, add or verify the Cheers tokens, and read the special ids.

        ``config`` is the content of ``tokenizer_config.json`` (kept so :meth:`save` can write
        it back); it does not change how text is encoded.
        """
        _ensure_cheers_tokens(tokenizer)
        self._tokenizer = tokenizer
        self._config: dict[str, Any] = dict(config) if config is not None else {}
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        # encode_special_tokens is state on the shared backend: toggled only under this lock.
        self._plain_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A lock cannot be pickled (DataLoader workers, multiprocessing): each copy gets its own.
        state = dict(self.__dict__)
        del state["_plain_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plain_lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, path: str | Path) -> CheersTokenizer:
        """Load the tokenizer of a model folder.

        Uses ``tokenizer.json`` when present, otherwise ``vocab.json`` + ``merges.txt`` with the
        added tokens of ``tokenizer_config.json``. The five Cheers tokens are appended when the
        files lack them, and their ids are checked.
        """
        _check_folder_arg(path, "from_folder()")
        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(
                f"Tokenizer folder {str(folder)!r} does not exist or is not a directory. Pass "
                f"the model folder that holds {_ACCEPTED_FILES}."
            )
        config = _read_config(folder / "tokenizer_config.json")
        tokenizer_json = folder / "tokenizer.json"
        if tokenizer_json.is_file():
            try:
                tokenizer = Tokenizer.from_file(str(tokenizer_json))
            except Exception as exc:
                raise CheckpointError(
                    f"Cannot parse {str(tokenizer_json)!r} ({exc}). Replace it with the "
                    "checkpoint's original file, or delete it to load vocab.json + merges.txt."
                ) from exc
            return cls(tokenizer, config)

        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        missing = [p.name for p in (vocab, merges) if not p.is_file()]
        if config is None:
            missing.append("tokenizer_config.json")
        if missing or config is None:
            raise CheckpointError(
                f"Tokenizer folder {str(folder)!r} has no tokenizer.json and lacks "
                f"{', '.join(missing)}. A tokenizer folder needs {_ACCEPTED_FILES}; copy them "
                "from the released checkpoint."
            )
        tokenizer = _build_qwen2_tokenizer(vocab, merges)
        _add_config_tokens(tokenizer, config, folder)
        return cls(tokenizer, config)

    # -- text <-> ids -------------------------------------------------------------------------

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tokenizer

    def __len__(self) -> int:
        """Number of token ids, added tokens included (151670 for the release)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(
        self, text: str, allowed_special: Collection[str] | Literal["all"] = ()
    ) -> list[int]:
        """Token ids of ``text``, with special-token strings in it tokenised as plain text.

        ``<|im_end|>``, ``<image>`` and the other special tokens written in ``text`` become the
        ids of their characters, as any other text: user text cannot produce control tokens.
        ``allowed_special`` names the exact strings that do become special ids, e.g.
        ``[IMAGE_SLOT_TEXT]`` (an image slot) or :data:`DATA_PLACEHOLDERS` (the training
        data format); ``"all"`` recognises every added token, for text rendered by trusted code.
        Non-special added tokens (Qwen's ``<tool_call>``…) keep their single id, as in the
        Hugging Face tokenizer. No BOS/EOS is added, as in the reference.
        """
        if not isinstance(text, str):
            raise PromptError(
                f"encode() takes a str, got {type(text).__name__}. Pass the prompt text."
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PromptError(
                f"the text holds a lone surrogate ({exc.object[exc.start : exc.end]!r} at "
                f"{exc.start}), which is not valid Unicode; decode the input with "
                "errors='replace' or remove that character"
            ) from exc
        if (
            isinstance(text, ChatText)
            and not isinstance(allowed_special, str)
            and not allowed_special
        ):
            return self._encode_pieces(text._pieces, image_placeholders=True)
        if isinstance(allowed_special, str):
            if allowed_special != "all":
                raise PromptError(
                    f"allowed_special={allowed_special!r} is a single string. Pass 'all' or a "
                    f"list of strings, e.g. [{IMAGE_SLOT_TEXT!r}]."
                )
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        try:
            given = list(allowed_special)
        except TypeError:
            given = [allowed_special]
        if not all(isinstance(a, str) and a for a in given):
            raise PromptError(
                f"allowed_special must be 'all' or a list of non-empty strings, got "
                f"{allowed_special!r}. Pass e.g. [{IMAGE_SLOT_TEXT!r}]."
            )
        # Longest first, so a unit wins over a token it contains.
        allowed = sorted(set(given), key=len, reverse=True)
        if not allowed:
            return self._encode_plain(text)
        ids: list[int] = []
        pattern = re.compile("|".join(re.escape(a) for a in allowed))
        start = 0
        for match in pattern.finditer(text):
            ids += self._encode_plain(text[start : match.start()])
            ids += self._tokenizer.encode(match.group(), add_special_tokens=False).ids
            start = match.end()
        return ids + self._encode_plain(text[start:])

    def _encode_plain(self, text: str) -> list[int]:
        """Ids of ``text`` with every special added token matched as ordinary characters."""
        if not text:
            return []
        with self._plain_lock:
            previous = self._tokenizer.encode_special_tokens
            self._tokenizer.encode_special_tokens = True
            try:
                return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
            finally:
                self._tokenizer.encode_special_tokens = previous

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, or a 1-D tensor/array).

        With ``skip_special_tokens`` the tokens flagged special are dropped: the Qwen control
        tokens (``<|im_end|>``…) and the five Cheers tokens, but not the non-special added
        tokens such as ``<tool_call>`` (this is what reproduces the reference's answers). Ids
        beyond the tokenizer (the model's embedding table is padded to 151936 rows) decode to
        nothing, as in the Hugging Face tokenizer.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # type: ignore[union-attr]
        if isinstance(ids, int):
            ids = [ids]
        if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
            raise PromptError(
                f"decode() takes a sequence of token ids, got {type(ids).__name__}. Pass a list "
                "of ints or a 1-D tensor."
            )
        values: list[int] = []
        for token_id in ids:
            if isinstance(token_id, list):
                raise PromptError(
                    "decode() takes one sequence of ids, got a nested list/batch. Decode each "
                    "row separately."
                )
            if isinstance(token_id, bool) or not hasattr(type(token_id), "__index__"):
                raise PromptError(
                    f"decode() got {token_id!r}, which is not a token id; ids are integers"
                )
            value = operator.index(token_id)
            if value >= 2**32:
                raise PromptError(
                    f"decode() got the id {value}, beyond any vocabulary; ids are below "
                    f"{len(self)} for this tokenizer"
                )
            if value < 0:
                raise PromptError(
                    f"decode() got the negative id {value}, a placeholder (-200 marks an image "
                    "in input_ids), not a token. Replace it with the token id (e.g. "
                    f"{self.special.image} for <image>) or drop it before decoding."
                )
            values.append(value)
        return self._tokenizer.decode(values, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of ``token`` (a vocabulary entry or added token), or None if it is unknown."""
        if not isinstance(token, str):
            raise PromptError(f"token_to_id() takes a str, got {type(token).__name__}")
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Vocabulary string of ``token_id`` (byte-level form, e.g. ``Ġthe``), or None."""
        if isinstance(token_id, bool) or not hasattr(type(token_id), "__index__"):
            raise PromptError(f"id_to_token() takes an int id, got {token_id!r}")
        token_id = operator.index(token_id)
        if token_id < 0 or token_id >= 2**32:
            return None
        return self._tokenizer.id_to_token(token_id)

    # -- chat ---------------------------------------------------------------------------------

    @overload
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        *,
        tokenize: Literal[False] = False,
        image_placeholders: bool = False,
    ) -> str: ...

    @overload
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        *,
        tokenize: Literal[True],
        image_placeholders: bool = False,
    ) -> list[int]: ...

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        *,
        tokenize: bool = False,
        image_placeholders: bool = False,
    ) -> str | list[int]:
        """Render ``messages`` in Qwen ChatML, exactly as the released Jinja template does.

        ``messages`` is a list of ``{"role": "system"|"user"|"assistant", "content": str}``.
        The default system prompt is inserted when the first message is not a system message.
        A different template in a loaded ``tokenizer_config.json`` is kept for :meth:`save` but
        not interpreted: the checkpoint was trained with this format.

        With ``tokenize=False`` (the default) the rendered text is returned as a
        :class:`ChatText`, which :meth:`encode` tokenises safely (do not pass
        ``allowed_special="all"`` with it: special-token text in a message would become control
        tokens). ``tokenize=True`` returns the ids, where only the template's own
        ``<|im_start|>``/``<|im_end|>`` are control tokens and message text is plain text, except
        that with ``image_placeholders`` each ``<im_start><image><im_end>`` in it is an image slot.
        """
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise PromptError(
                f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got "
                f"{type(messages).__name__}. Wrap a plain prompt as "
                "[{'role': 'user', 'content': prompt}]."
            )
        if len(messages) == 0:
            raise PromptError(
                "messages is empty. Pass at least one message, e.g. "
                "[{'role': 'user', 'content': prompt}]."
            )
        # The template as (is_control_token, text) pieces: the text pieces are what a user wrote
        # (plus role names), so they are tokenised apart from the control tokens.
        pieces: list[tuple[bool, str]] = []
        for index, message in enumerate(messages):
            if (
                not isinstance(message, Mapping)
                or "role" not in message
                or "content" not in message
            ):
                raise PromptError(
                    f"messages[{index}] is {message!r}, not a dict with 'role' and 'content'. "
                    "Write each message as {'role': 'user', 'content': '...'}."
                )
            role, content = message["role"], message["content"]
            if role not in _CHAT_ROLES:
                raise PromptError(
                    f"messages[{index}] has role {role!r}, which the chat template does not "
                    f"know. Use one of {', '.join(_CHAT_ROLES)}."
                )
            if not isinstance(content, str):
                raise PromptError(
                    f"messages[{index}]['content'] is a {type(content).__name__}, not a str. "
                    "Pass text; put an image in the text as <im_start><image><im_end>."
                )
            if index == 0 and role != "system":
                pieces += _turn("system", DEFAULT_SYSTEM_PROMPT)
            pieces += _turn(role, content)
        if add_generation_prompt:
            pieces += [(True, _CHAT_START), (False, "assistant\n")]
        if not tokenize:
            rendered = ChatText("".join(text for _, text in pieces))
            rendered._pieces = tuple(pieces)
            return rendered
        return self._encode_pieces(pieces, image_placeholders)

    def _encode_pieces(
        self, pieces: Iterable[tuple[bool, str]], image_placeholders: bool
    ) -> list[int]:
        allowed = (IMAGE_SLOT_TEXT,) if image_placeholders else ()
        ids: list[int] = []
        for control, text in pieces:
            if control:
                ids.append(self.special.im_start_chat if text == _CHAT_START else self.special.eos)
            else:
                ids += self.encode(text, allowed_special=allowed)
        return ids

    @property
    def chat_template(self) -> str:
        """The Jinja chat template written to ``tokenizer_config.json``."""
        template = self._config.get("chat_template")
        return template if isinstance(template, str) else QWEN2_CHAT_TEMPLATE

    # -- saving -------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write a Hugging Face style Qwen2 tokenizer folder.

        Writes ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``
        (with the Cheers tokens in ``added_tokens_decoder``); :meth:`from_folder` on the result
        encodes identically, from ``tokenizer.json`` or from the other three files.
        """
        _check_folder_arg(folder, "save()")
        out = Path(folder)
        model = self._tokenizer.model
        if not isinstance(model, models.BPE):
            raise CheckpointError(
                f"Cannot write vocab.json/merges.txt for a {type(model).__name__} model; only "
                "BPE tokenizers (Qwen2) are supported. Save the backend's tokenizer.json instead."
            )
        config = {**_DEFAULT_CONFIG, **self._config}
        config["added_tokens_decoder"] = {
            str(token_id): {
                "content": tok.content,
                "lstrip": tok.lstrip,
                "normalized": tok.normalized,
                "rstrip": tok.rstrip,
                "single_word": tok.single_word,
                "special": tok.special,
            }
            for token_id, tok in sorted(self._tokenizer.get_added_tokens_decoder().items())
        }
        config["chat_template"] = self.chat_template
        config = dict(sorted(config.items()))
        # Staged, then moved into place: a killed save leaves no half-written file behind.
        with staged_files(out, "tokenizer folder") as (staging, names):
            self._tokenizer.save(str(staging / "tokenizer.json"), pretty=True)
            # The Rust writer reproduces the released vocab.json and merges.txt byte for byte.
            model.save(str(staging))
            (staging / "tokenizer_config.json").write_text(
                json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
            )
            names += ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"]

    def __repr__(self) -> str:
        return f"CheersTokenizer(vocab={len(self)}, special={self.special})"


def _check_folder_arg(folder: object, where: str) -> None:
    if not isinstance(folder, str | os.PathLike) or not os.fspath(folder):
        raise CheckpointError(
            f"CheersTokenizer.{where} takes a folder path (a str or pathlib.Path), got {folder!r}"
        )


def _turn(role: str, content: str) -> list[tuple[bool, str]]:
    # "role\ncontent" stays one piece: the BPE split then equals that of the rendered string.
    return [(True, _CHAT_START), (False, f"{role}\n{content}"), (True, _CHAT_END), (False, "\n")]


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"Cannot read {str(path)!r} ({exc}). Replace it with the checkpoint's original "
            "tokenizer_config.json."
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(config).__name__}, not a JSON object. Replace it with "
            "the checkpoint's original tokenizer_config.json."
        )
    return config


def train_compact_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> CheersTokenizer:
    """A small byte-level BPE with Qwen2's pre-tokenisation, trained on ``texts``.

    For models trained from scratch on a narrow domain (the embedded Shapes model): the
    embedding table and output projection shrink from 151,936 rows to ``vocab_size``. The
    chat-template tokens and the five Cheers tokens are special tokens of it, every byte has a
    token (any text still encodes), and training is deterministic.
    """
    from tokenizers import pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *(c for c, _ in CHEERS_TOKENS)]
    tokenizer = Tokenizer.from_str(json.dumps(_QWEN2_PIPELINE))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(t, normalized=False, special=True) for t in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    config = {"added_tokens_decoder": {}, "chat_template": QWEN2_CHAT_TEMPLATE}
    return CheersTokenizer(tokenizer, config)


def _build_qwen2_tokenizer(vocab: Path, merges: Path) -> Tokenizer:
    try:
        bpe = models.BPE.from_file(
            str(vocab), str(merges), continuing_subword_prefix="", end_of_word_suffix=""
        )
    except Exception as exc:
        raise CheckpointError(
            f"Cannot read the BPE files {str(vocab)!r} / {str(merges)!r} ({exc}). Replace them "
            "with the checkpoint's original vocab.json and merges.txt."
        ) from exc
    # Declared as JSON rather than through the Python constructors because decoders.ByteLevel()
    # cannot be given the released file's flags; this way a saved tokenizer.json matches it.
    tokenizer = Tokenizer.from_str(json.dumps(_QWEN2_PIPELINE))
    tokenizer.model = bpe
    return tokenizer


def _add_config_tokens(tokenizer: Tokenizer, config: Mapping[str, Any], folder: Path) -> None:
    """Append the ``added_tokens_decoder`` entries of ``config`` at their recorded ids."""
    decoder = config.get("added_tokens_decoder", {})
    if not isinstance(decoder, Mapping):
        raise CheckpointError(
            f"added_tokens_decoder in {str(folder / 'tokenizer_config.json')!r} is not an "
            "object. Replace the file with the checkpoint's original."
        )
    try:
        entries = sorted((int(k), v) for k, v in decoder.items())
    except ValueError as exc:
        raise CheckpointError(
            f"added_tokens_decoder in {str(folder / 'tokenizer_config.json')!r} has a non-integer "
            "id. Replace the file with the checkpoint's original."
        ) from exc
    for token_id, entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("content"), str):
            raise CheckpointError(
                f"added_tokens_decoder[{token_id}] in {str(folder / 'tokenizer_config.json')!r} "
                "has no 'content' string. Replace the file with the checkpoint's original."
            )
        token = AddedToken(
            entry["content"],
            single_word=bool(entry.get("single_word", False)),
            lstrip=bool(entry.get("lstrip", False)),
            rstrip=bool(entry.get("rstrip", False)),
            normalized=bool(entry.get("normalized", False)),
            special=bool(entry.get("special", False)),
        )
        _add_token(tokenizer, token)
        got = tokenizer.token_to_id(token.content)
        if got != token_id:
            raise CheckpointError(
                f"Added token {token.content!r} is listed with id {token_id} in "
                f"{str(folder / 'tokenizer_config.json')!r} but lands at id {got} (the ids must "
                "continue vocab.json without gaps). Use the vocab.json, merges.txt and "
                "tokenizer_config.json of the same checkpoint."
            )


def _add_token(tokenizer: Tokenizer, token: AddedToken) -> None:
    # add_special_tokens is what marks a token as skipped by decode(skip_special_tokens=True).
    if token.special:
        tokenizer.add_special_tokens([token])
    else:
        tokenizer.add_tokens([token])


def _ensure_cheers_tokens(tokenizer: Tokenizer) -> None:
    """Append the five Cheers tokens (special, like the reference) or check their ids.

    A compact vocabulary (smaller than Qwen2's, e.g. the embedded default model's) that already
    holds all five tokens keeps its own ids: its model was trained with them.
    """
    ids = [tokenizer.token_to_id(content) for content, _ in CHEERS_TOKENS]
    if None not in ids and tokenizer.get_vocab_size(with_added_tokens=True) < CHEERS_TOKENS[0][1]:
        return
    for content, expected in CHEERS_TOKENS:
        existing = tokenizer.token_to_id(content)
        if existing is None:
            size = tokenizer.get_vocab_size(with_added_tokens=True)
            if size != expected:
                raise CheckpointError(
                    f"Cannot add {content!r} at id {expected}: the tokenizer has {size} ids, so "
                    f"it would get id {size} and the model's embedding rows would not match. "
                    "Use the Qwen2.5 tokenizer files of the released Cheers checkpoint."
                )
            _add_token(tokenizer, AddedToken(content, normalized=False, special=True))
            existing = tokenizer.token_to_id(content)
        if existing != expected:
            raise CheckpointError(
                f"Token {content!r} has id {existing}, but the Cheers checkpoint uses id "
                f"{expected}. Use the tokenizer files of the released Cheers checkpoint, or "
                "remove the conflicting token from them."
            )
