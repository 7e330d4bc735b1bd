"""The answering LM: reads exactly K x M selected memory tokens plus the question, writes words.

VideoStreaming's answerer sees a constant budget of K x M memory tokens whatever the video's
length. Here it is a small HF causal LM over a word-level answer vocabulary (given by the
caller, so models/ never imports the data code): the sequence is
``[K*M projected memories (+ clip-time code), question embedding tokens, question words,
BOS, answer words, EOS]`` and only the answer positions carry a loss. The question's words
are read like an LM reads its prompt: a word of the answer vocabulary shares its embedding
with the output word (so "which came first, the X or the Y?" can copy X), any other word
gets one of ``word_buckets`` hashed embeddings. A separate ``PreTrainedModel``, saved in the
``answerer/`` subfolder of a VMem checkpoint, so the encoder's checkpoint stays as it is.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from models.config import _as_config_dict, build_sub_config
from models.hf import base_model_from_config
from models.select import offered_alternatives

SPECIALS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2; the answer words follow
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

DEFAULT_ANSWER_LM: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 32,  # unused: the LM reads inputs_embeds; the output head is our own
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 256,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
}


class AnswererConfig(PreTrainedConfig):
    """Hyper-parameters of the memory-reading answerer."""

    model_type = "vmem-answerer"

    # HF causal-LM config (dict with model_type) of the answering LM
    lm_config: dict | PreTrainedConfig | None = None
    # D: width of the memory tokens (the streaming encoder's hidden size)
    memory_dim: int = 64
    # K: clips selected per question
    k: int = 4
    # M: memory tokens per clip
    memory_tokens: int = 8
    # E: width of the question embedding given to the answerer
    question_dim: int = 64
    # question embedding is projected to this many LM tokens
    question_tokens: int = 2
    # the answer words (special tokens are added in front of them)
    vocab: list[str] | None = None
    # question words read after the question embedding (longer questions are cut); 0: none
    question_words: int = 32
    # hashed embeddings of question words outside the answer vocabulary
    word_buckets: int = 64
    # longest answer in words (EOS excluded)
    max_answer_tokens: int = 8
    # std of the normal init of the answerer's own layers
    initializer_range: float = 0.02
    # gaps (in clips) to the previous selected clip are coded 1..max_gap (longer: max_gap),
    # so the answerer tells adjacent clips (one scene across a clip boundary) from far ones
    max_gap: int = 8
    # read the question before the memories, so (causal) memory positions attend to it and
    # each selected clip is read for what the question asks; False: memories first
    question_first: bool = False
    # a question offering alternatives ("... the X or the Y?") is answered with the likelier
    # of them (``offered_choices``), not by free decoding, which can mix their words
    answer_offered_choices: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        self.lm_config = _as_config_dict(self.lm_config, DEFAULT_ANSWER_LM, "lm_config")
        self.vocab = list(self.vocab or [])
        if len(set(self.vocab)) != len(self.vocab) or set(self.vocab) & set(SPECIALS):
            raise ValueError("vocab words must be unique and not special tokens")
        for name in (
            "memory_dim",
            "k",
            "memory_tokens",
            "question_dim",
            "max_answer_tokens",
            "word_buckets",
            "max_gap",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        super().__post_init__(**kwargs)

    def lm(self) -> PreTrainedConfig:
        return build_sub_config(self.lm_config)

    @property
    def tokens(self) -> list[str]:
        """Every output token: specials, then the answer words."""
        return [*SPECIALS, *(self.vocab or [])]  # vocab: a list after __post_init__


def clip_time_code(clip_index: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal code of positions: (B, K) -> (B, K, dim); position -1 (padding) gets zeros.

    The answerer codes each selected memory's slot (its place among the K, in time order).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=clip_index.device) / half)
    angles = clip_index.clamp_min(0).float().unsqueeze(-1) * freqs  # (B, K, half)
    code = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, K, 2*half)
    code = F.pad(code, (0, dim - 2 * half))
    return code * (clip_index >= 0).unsqueeze(-1).float()


def selection_gaps(clip_index: torch.Tensor, max_gap: int) -> torch.Tensor:
    """Clips between each selected clip and the one before it: (B, K) ascending indices (-1
    pads at the end) -> (B, K) in 1..max_gap, 0 for the first slot and for padding."""
    gaps = (clip_index[:, 1:] - clip_index[:, :-1]).clamp(1, max_gap)  # (B, K-1)
    gaps = gaps.masked_fill(clip_index[:, 1:] < 0, 0)
    return torch.cat([torch.zeros_like(clip_index[:, :1]), gaps], dim=1)


class MemoryAnswerer(PreTrainedModel):
    """(K*M memories, question embedding) -> answer words (teacher-forced CE, greedy decode)."""

    config_class = AnswererConfig
    base_model_prefix = "answerer"
    main_input_name = "memories"

    def __init__(self, config: AnswererConfig) -> None:
        super().__init__(config)
        lm_config = config.lm()
        hidden = lm_config.hidden_size  # H
        self.lm = base_model_from_config(lm_config)
        self.memory_in = nn.Linear(config.memory_dim, hidden)
        self.time_in = nn.Linear(config.memory_dim, hidden)
        self.relevance_in = nn.Linear(1, hidden)  # how well each selected clip fit the question
        self.gap_in = nn.Embedding(config.max_gap + 1, hidden)  # 0: first or empty slot
        self.question_in = nn.Linear(config.question_dim, config.question_tokens * hidden)
        # output tokens, then the hashed buckets of other question words
        self.token_embed = nn.Embedding(len(config.tokens) + config.word_buckets, hidden)
        self.head = nn.Linear(hidden, len(config.tokens))
        self.post_init()

    # -- tokens ---------------------------------------------------------------------------
    def encode_answers(self, answers: Sequence[Sequence[str]]) -> torch.Tensor:
        """Word lists -> (B, L) ids ``words + EOS``, PAD after; L = max_answer_tokens + 1."""
        index = {w: i for i, w in enumerate(self.config.tokens)}
        length = self.config.max_answer_tokens + 1
        ids = torch.full((len(answers), length), PAD_ID, dtype=torch.long)
        for row, words in enumerate(answers):
            unknown = [w for w in words if w not in index]
            if unknown or len(words) > self.config.max_answer_tokens:
                raise ValueError(f"answer {list(words)} has unknown words or is too long")
            ids[row, : len(words) + 1] = torch.tensor([index[w] for w in words] + [EOS_ID])
        return ids

    def encode_questions(self, questions: Sequence[str] | None, batch: int) -> torch.Tensor:
        """Question texts -> (B, question_words) word ids, PAD after (all PAD when None)."""
        cfg, index = self.config, {w: i for i, w in enumerate(self.config.tokens)}
        ids = torch.full((batch, cfg.question_words), PAD_ID, dtype=torch.long)
        for row, text in enumerate(questions or []):
            words = re.findall(r"[a-z]+|[0-9]", text.lower())[: cfg.question_words]
            for col, word in enumerate(words):
                bucket = len(cfg.tokens) + zlib.crc32(word.encode()) % cfg.word_buckets
                ids[row, col] = index.get(word, bucket)
        return ids

    def offered_choices(self, question: str) -> list[list[str]]:
        """The alternatives a question offers, "(the|a|an) X or (the|a|an) Y", each cut to its
        leading answer-vocabulary words ("the red square moving up" -> ["red", "square"]);
        [] when it offers no two distinct ones."""
        vocab, out = set(self.config.vocab), []
        for side in offered_alternatives(question):
            words = side.split()
            lead = next((i for i, w in enumerate(words) if w not in vocab), len(words))
            out.append(words[: min(lead, self.config.max_answer_tokens)])
        return out if len(out) == 2 and all(out) and out[0] != out[1] else []

    def decode_ids(self, ids: Sequence[int]) -> str:
        """Ids up to EOS -> the answer string (words joined by spaces), at most
        max_answer_tokens words (greedy decoding may run one step past them without EOS)."""
        words: list[str] = []
        for i in ids:
            if i == EOS_ID or len(words) == self.config.max_answer_tokens:
                break
            if i >= len(SPECIALS):
                words.append(self.config.tokens[i])
        return " ".join(words)

    # -- model ----------------------------------------------------------------------------
    def prefix(
        self,
        memories: torch.Tensor,
        question_emb: torch.Tensor,
        clip_index: torch.Tensor | None = None,
        questions: Sequence[str] | None = None,
        relevance: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K*M, D), (B, E), (B, K), B texts, (B, K) -> prefix embeddings (B, S, H) and
        its mask (B, S), S = K*M + question_tokens + question_words.

        ``relevance``: the selection score (cosine) of each selected clip, added to its
        memory tokens with the clip-time code: which of the K clips answer the question.
        """
        cfg = self.config
        batch = memories.shape[0]
        expected = (batch, cfg.k * cfg.memory_tokens, cfg.memory_dim)
        assert tuple(memories.shape) == expected, (
            f"the answerer reads exactly K*M memory tokens: {expected}, got {tuple(memories.shape)}"
        )
        if clip_index is None:
            clip_index = torch.arange(cfg.k, device=memories.device).expand(batch, -1)
        mem = self.memory_in(memories.to(self.memory_in.weight.dtype))  # (B, K*M, H)
        # the slot (0..K-1, in time order), not the clip index: the same inputs whatever the
        # video's length; "when" answers name slots (``slot_answer_words``)
        slot = torch.arange(cfg.k, device=memories.device).expand(batch, -1)
        slot = slot.masked_fill(clip_index < 0, -1)
        time = self.time_in(clip_time_code(slot, cfg.memory_dim))  # (B, K, H)
        time = time + self.gap_in(selection_gaps(clip_index, cfg.max_gap))
        if relevance is not None:
            time = time + self.relevance_in(relevance.to(mem.dtype).unsqueeze(-1))  # (B, K, H)
        mem = mem + time.repeat_interleave(cfg.memory_tokens, dim=1)  # (B, K*M, H)
        question = self.question_in(question_emb.to(mem.dtype)).view(batch, cfg.question_tokens, -1)
        valid = (clip_index >= 0).repeat_interleave(cfg.memory_tokens, dim=1)  # (B, K*M)
        words = self.encode_questions(questions, batch).to(memories.device)  # (B, Lq)
        parts = [(question, valid.new_ones(batch, cfg.question_tokens))]
        parts += [(self.token_embed(words), words != PAD_ID)]
        parts.insert(len(parts) if cfg.question_first else 0, (mem, valid))
        prefix = torch.cat([p for p, _ in parts], dim=1)
        return prefix, torch.cat([m for _, m in parts], dim=1).long()

    def memory_offset(self) -> int:
        """Where the K*M memory positions start in the prefix."""
        cfg = self.config
        return cfg.question_tokens + cfg.question_words if cfg.question_first else 0

    def hidden_states(
        self, prefix: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """The LM's last hidden states over prefix + [BOS, ids]: (B, S+1+L, H)."""
        bos = ids.new_full((ids.shape[0], 1), BOS_ID)
        tokens = self.token_embed(torch.cat([bos, ids], dim=1))  # (B, 1+L, H)
        full_mask = torch.cat([mask, mask.new_ones(ids.shape[0], tokens.shape[1])], dim=1)
        sequence = torch.cat([prefix, tokens], dim=1)
        out = self.lm(inputs_embeds=sequence, attention_mask=full_mask, use_cache=False)
        return out.last_hidden_state

    def logits(self, prefix: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Prefix + [BOS, ids] -> logits at the BOS and id positions: (B, 1+L, V)."""
        return self.head(self.hidden_states(prefix, mask, ids)[:, prefix.shape[1] :])

    def output_logits(
        self, prefix: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """``logits`` with PAD and BOS ruled out: what decoding may write (B, 1+L, V)."""
        logits = self.logits(prefix, mask, ids)
        logits[..., [PAD_ID, BOS_ID]] = float("-inf")
        return logits

    def forward(
        self,
        memories: torch.Tensor,
        question_emb: torch.Tensor,
        answer_ids: torch.Tensor,
        clip_index: torch.Tensor | None = None,
        questions: Sequence[str] | None = None,
        relevance: torch.Tensor | None = None,
        memory_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced mean CE over answer words and EOS (PAD ignored): a scalar; with
        ``memory_states`` also the last hidden states at the K*M memory positions (B, K*M, H),
        which read the question first when ``question_first`` (for training-only heads)."""
        prefix, mask = self.prefix(memories, question_emb, clip_index, questions, relevance)
        hidden = self.hidden_states(prefix, mask, answer_ids[:, :-1])  # predicts answer_ids
        logits = self.head(hidden[:, prefix.shape[1] :])
        targets = answer_ids.masked_fill(answer_ids == PAD_ID, -100)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        if not memory_states:
            return loss
        start = self.memory_offset()
        return loss, hidden[:, start : start + memories.shape[1]]

    @torch.no_grad()
    def generate_answers(
        self,
        memories: torch.Tensor,
        question_emb: torch.Tensor,
        clip_index: torch.Tensor | None = None,
        questions: Sequence[str] | None = None,
        relevance: torch.Tensor | None = None,
    ) -> list[str]:
        """Greedy decoding, at most max_answer_tokens words: one string per row. A question
        offering two alternatives gets the likelier of them instead (``offered_choices``,
        when ``answer_offered_choices``), so its answer never mixes their words."""
        prefix, mask = self.prefix(memories, question_emb, clip_index, questions, relevance)
        batch = prefix.shape[0]
        texts = list(questions or []) if self.config.answer_offered_choices else []
        offered = [self.offered_choices(text) for text in texts] + [[]] * (batch - len(texts))
        chosen = [row for row in range(batch) if offered[row]]
        free = [row for row in range(batch) if not offered[row]]
        picks = self.likeliest(prefix[chosen], mask[chosen], [offered[row] for row in chosen])
        answers = dict(zip(chosen, picks, strict=True))
        answers.update(zip(free, self.greedy(prefix[free], mask[free]), strict=True))
        return [answers[row] for row in range(batch)]

    def greedy(self, prefix: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Greedy decoding after each row's prefix (B, S, H) and mask (B, S)."""
        if prefix.shape[0] == 0:
            return []
        ids = prefix.new_zeros((prefix.shape[0], 0), dtype=torch.long)
        for _ in range(self.config.max_answer_tokens + 1):
            logits = self.output_logits(prefix, mask, ids)[:, -1]  # (B, V)
            ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
            if (ids == EOS_ID).any(dim=1).all():
                break
        return [self.decode_ids(row.tolist()) for row in ids]

    def likeliest(
        self, prefix: torch.Tensor, mask: torch.Tensor, choices: list[list[list[str]]]
    ) -> list[str]:
        """Per row, the choice (word list) whose words + EOS the answerer finds likeliest after
        the row's prefix (B, S, H) and mask (B, S): summed log-probabilities, every choice of
        every row scored in one pass."""
        if not choices:
            return []
        owner = torch.tensor([row for row, options in enumerate(choices) for _ in options])
        flat = [option for options in choices for option in options]
        ids = self.encode_answers(flat).to(prefix.device)  # (C, L)
        logits = self.output_logits(prefix[owner], mask[owner], ids[:, :-1])
        logp = logits.log_softmax(dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (C, L)
        total = logp.masked_fill(ids == PAD_ID, 0.0).sum(dim=1).tolist()
        out, start = [], 0
        for options in choices:
            scores = total[start : start + len(options)]
            out.append(" ".join(options[scores.index(max(scores))]))
            start += len(options)
        return out


ANSWERER_DIR = "answerer"  # the answerer's subfolder inside a trained VMem checkpoint
# a slot answer once its digits are joined: "2-3", the 2nd to 3rd of the selected clips
SLOT_RANGE = re.compile(r"^(\d+)-(\d+)$")


def slot_answer_words(evidence: torch.Tensor, relevance: torch.Tensor) -> list[list[str]]:
    """A "when" answer as selected slots: (B, K) bool slots holding evidence, (B, K) scores
    -> per row ["first", "-", "last"] slot numbers from 1 (the best-scored slot when no
    slot holds evidence). The query stage maps slots back to their clips' seconds."""
    out = []
    for row, scores in zip(evidence.tolist(), relevance.tolist(), strict=True):
        slots = [i for i, hit in enumerate(row) if hit] or [
            max(range(len(scores)), key=scores.__getitem__)
        ]
        out.append([*str(slots[0] + 1), "-", *str(slots[-1] + 1)])
    return out


def readable_answer(words: str, slot_times: list[tuple[float, float]]) -> str:
    """The answerer's words as a user reads them.

    Numbers are generated digit by digit ("1 2" -> "12"); a slot range ("2 - 3", what the
    answerer says for "when ...?": the 2nd to 3rd of the selected clips, in time order)
    becomes the seconds those clips cover (``slot_times``, (t_start, t_end) of each slot:
    "48-96"). Anything else is left as it is.
    """
    tokens = words.split()
    if not tokens or not all(t.isdigit() or t in "-." for t in tokens):
        return words
    joined = "".join(tokens)
    found = SLOT_RANGE.match(joined)
    if found is None:
        return joined
    first, last = int(found.group(1)), int(found.group(2))
    if not 1 <= first <= last <= len(slot_times):
        return joined
    return f"{slot_times[first - 1][0]:g}-{slot_times[last - 1][1]:g}"


AutoConfig.register(AnswererConfig.model_type, AnswererConfig, exist_ok=True)
AutoModel.register(AnswererConfig, MemoryAnswerer, exist_ok=True)
