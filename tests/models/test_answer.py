"""The memory answerer: shapes, the K*M budget, HF round trip, and that it can learn."""

from __future__ import annotations

import pytest
import torch

from checkpoints.registry import build_default_model
from models.answer import (
    EOS_ID,
    AnswererConfig,
    MemoryAnswerer,
    clip_time_code,
    readable_answer,
    selection_gaps,
    slot_answer_words,
)
from models.select import select_clips
from training.heads import ClipLabelHead, EvidencePlaceHead
from training.losses import (
    alignment_loss,
    encode_video_clips,
    select_memories,
    selection_bias,
    training_losses,
)

VOCAB = ["red", "blue", "circle", "square", "0", "1", "2", "-"]


def make_answerer(seed: int = 0, **overrides) -> MemoryAnswerer:
    fields = dict(vocab=VOCAB, k=2, memory_tokens=3, memory_dim=16, question_dim=8)
    torch.manual_seed(seed)
    return MemoryAnswerer(AnswererConfig(**{**fields, **overrides}))


def test_encode_answers_appends_eos_and_pads():
    answerer = make_answerer()
    ids = answerer.encode_answers([["red", "circle"], ["1"]])
    assert ids.shape == (2, answerer.config.max_answer_tokens + 1)
    assert ids[0, :3].tolist() == [3, 5, EOS_ID] and ids[0, 3:].eq(0).all()
    assert answerer.decode_ids(ids[0].tolist()) == "red circle"
    with pytest.raises(ValueError):
        answerer.encode_answers([["purple"]])


def test_reads_exactly_k_times_m_memory_tokens():
    answerer = make_answerer()
    question = torch.randn(3, 8)
    ids = answerer.encode_answers([["red"], ["2"], ["blue", "square"]])
    loss = answerer(torch.randn(3, 6, 16), question, ids)
    assert loss.ndim == 0 and torch.isfinite(loss)
    answers = answerer.generate_answers(torch.randn(3, 6, 16), question)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    for wrong in (5, 7, 12):  # fewer, more, a whole longer video: refused
        with pytest.raises(AssertionError, match="exactly K\\*M"):
            answerer(torch.randn(3, wrong, 16), question, ids)


def test_question_words_share_answer_ids_and_hash_the_rest():
    answerer = make_answerer()
    ids = answerer.encode_questions(["Which came first, the red circle or the blue square?"], 1)
    tokens = answerer.config.tokens
    words = [tokens[i] if i < len(tokens) else "#" for i in ids[0].tolist() if i != 0]
    assert words == ["#", "#", "#", "#", "red", "circle", "#", "#", "blue", "square"]
    assert ids.shape == (1, answerer.config.question_words)
    assert ids[0, 0] == answerer.encode_questions(["which"], 1)[0, 0]  # stable hashing
    assert answerer.encode_questions(None, 2).eq(0).all()


def test_answer_depends_on_question_words_and_relevance():
    answerer = make_answerer().eval()
    memories, question = torch.randn(1, 6, 16), torch.randn(1, 8)
    ids = answerer.encode_answers([["red"]])
    plain = answerer(memories, question, ids)
    worded = answerer(memories, question, ids, questions=["the red circle?"])
    scored = answerer(memories, question, ids, relevance=torch.tensor([[0.9, -0.2]]))
    assert not torch.isclose(plain, worded) and not torch.isclose(plain, scored)


def test_slot_answer_words_name_the_evidence_slots_or_the_best_guess():
    evidence = torch.tensor([[False, True, True, False], [False, False, False, False]])
    relevance = torch.tensor([[0.1, 0.9, 0.8, 0.0], [0.2, 0.1, 0.7, 0.3]])
    assert slot_answer_words(evidence, relevance) == [["2", "-", "3"], ["3", "-", "3"]]


def test_training_replaces_when_targets_by_selected_slots(model, make_clips):
    question_dim = model.question_encoder.proj.in_features
    answerer = make_answerer(
        memory_dim=model.hidden_size, memory_tokens=model.memory_tokens, question_dim=question_dim
    )
    kwargs = dict(
        frames=make_clips(3, seed=0).unsqueeze(0),  # one video of 3 clips
        questions=["when?"],
        video_of=torch.tensor([0]),
        positives=torch.tensor([[False, True, False]]),
        answer_ids=answerer.encode_answers([["red"]]),
        k=2,
        oracle=torch.tensor([True]),  # clip 1 is forced in: the target is a slot of it
    )
    plain = training_losses(model, answerer, **kwargs)["answer"]
    slotted = training_losses(model, answerer, **kwargs, slot_answers=torch.tensor([True]))
    assert not torch.isclose(plain, slotted["answer"])  # another target: "2 - 2" or "1 - 1"


def test_question_first_lets_the_memory_positions_read_the_question():
    memories, question = torch.randn(1, 6, 16), torch.randn(1, 8)
    texts = (["Which came first, the red circle or the blue square?"], ["How many stars?"])
    for question_first in (False, True):
        answerer = make_answerer(question_first=question_first).eval()
        start = 2 + answerer.config.question_words if question_first else 0  # memories at
        states = []
        for text in texts:
            prefix, mask = answerer.prefix(memories, question, questions=text)
            assert prefix.shape[1] == 6 + 2 + answerer.config.question_words
            assert mask[0, start : start + 6].all()
            hidden = answerer.lm(inputs_embeds=prefix, attention_mask=mask).last_hidden_state
            states.append(hidden[0, start : start + 6])
        # causal attention: memories read after the question depend on it, before it do not
        assert torch.allclose(*states) != question_first


def test_selection_gaps_tell_adjacent_clips_from_far_ones():
    index = torch.tensor([[2, 3, 9, 30], [0, 5, -1, -1]])
    assert selection_gaps(index, 8).tolist() == [[0, 1, 6, 8], [0, 5, 0, 0]]


def test_clip_time_code_zero_for_padded_slots():
    code = clip_time_code(torch.tensor([[0, 3, -1]]), 16)
    assert code.shape == (1, 3, 16)
    assert code[0, 2].eq(0).all() and not code[0, 1].eq(0).all()


def test_round_trip(tmp_path):
    answerer = make_answerer().eval()
    answerer.save_pretrained(tmp_path)
    loaded = MemoryAnswerer.from_pretrained(tmp_path).eval()
    assert loaded.config.vocab == VOCAB and loaded.config.k == 2
    memories, question = torch.randn(2, 6, 16), torch.randn(2, 8)
    ids = answerer.encode_answers([["red"], ["0", "-", "1"]])
    assert torch.allclose(answerer(memories, question, ids), loaded(memories, question, ids))
    assert answerer.generate_answers(memories, question) == loaded.generate_answers(
        memories, question
    )


@pytest.mark.parametrize("question_first", [False, True])
def test_overfits_a_tiny_batch(question_first):
    """The answer must come from the memories: two memory sets, two different answers."""
    answerer = make_answerer(seed=1, question_first=question_first)
    gen = torch.Generator().manual_seed(0)
    memories = torch.randn(4, 6, 16, generator=gen)
    question = torch.randn(4, 8, generator=gen)
    targets = [["red", "circle"], ["2"], ["blue", "square"], ["0", "-", "1"]]
    ids = answerer.encode_answers(targets)
    optim = torch.optim.AdamW(answerer.parameters(), lr=3e-3)
    first = answerer(memories, question, ids).item()
    for _ in range(60):
        loss = answerer(memories, question, ids)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.3 * first
    assert answerer.eval().generate_answers(memories, question) == [" ".join(t) for t in targets]


def test_offered_choices_are_the_leading_answer_words_of_each_alternative():
    answerer = make_answerer()
    choices = answerer.offered_choices
    assert choices("Which came first, the red circle moving up or the blue square?") == [
        ["red", "circle"],
        ["blue", "square"],
    ]
    assert choices("Did the blue square or the red circle appear earlier?") == [
        ["blue", "square"],
        ["red", "circle"],
    ]
    assert choices("Shown before the other: a red square or a 2?") == [["red", "square"], ["2"]]
    assert choices("How many times does a red circle appear?") == []
    assert choices("The red circle or the red circle?") == []  # no two distinct ones
    assert choices("The purple cone or the red circle?") == []  # one side has no answer word


def test_offered_choices_answer_with_the_likelier_alternative():
    """With choices on, the answer is whichever alternative has the lower teacher-forced CE;
    off, free decoding (which may name neither)."""
    answerer = make_answerer(seed=3).eval()
    gen = torch.Generator().manual_seed(0)
    memories, question = torch.randn(1, 6, 16, generator=gen), torch.randn(1, 8, generator=gen)
    for text in ("Which came first, the red circle or the blue square?",
                 "Which came first, the blue circle or the red square?"):  # fmt: skip
        options = answerer.offered_choices(text)
        ce = [answerer(memories, question, answerer.encode_answers([o]), None, [text]).item()
              for o in options]  # fmt: skip
        got = answerer.generate_answers(memories, question, questions=[text])
        assert got == [" ".join(options[ce.index(min(ce))])]
    answerer.config.answer_offered_choices = False  # this untrained one then names neither
    free = answerer.generate_answers(memories, question, questions=[text])[0]
    assert free.split() not in options
    assert len(free.split()) == answerer.config.max_answer_tokens  # no EOS: cut at the limit


def test_alignment_loss_prefers_positive_clips():
    questions = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    indicators = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]] * 2)  # (B=2, N=2, Q=2)
    right = torch.tensor([[True, False], [False, True]])
    assert alignment_loss(questions, indicators, right) < alignment_loss(
        questions, indicators, ~right
    )
    no_positive = torch.zeros(2, 2, dtype=torch.bool)  # rows without evidence are skipped
    assert alignment_loss(questions, indicators, no_positive).item() == pytest.approx(0.0)


def test_alignment_loss_each_clip_pulls_every_evidence_clip():
    questions = torch.tensor([[1.0, 0.0]] * 2)  # (B=2, Q=2)
    # clip scores 1, 0.5, 0 (temperature 1): evidence clips 0 and 1
    indicators = torch.tensor([[[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]]] * 2)
    positives = torch.tensor([[True, True, False]] * 2)
    logits = torch.tensor([1.0, 0.5, 0.0])
    every = logits.logsumexp(0)
    summed = (every - logits[:2].logsumexp(0)).item()  # -log of the evidence clips' sum
    each = (every - logits[:2]).mean().item()  # mean of -log of each evidence clip
    assert each > summed
    for marks, expected in (
        (None, summed),
        (torch.tensor([False, False]), summed),
        (torch.tensor([True, True]), each),
        (torch.tensor([True, False]), (each + summed) / 2),
    ):
        loss = alignment_loss(questions, indicators, positives, 1.0, marks)
        assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_select_memories_budget_and_order():
    gen = torch.Generator().manual_seed(0)
    memories = torch.randn(2, 5, 3, 4, generator=gen)  # (B, N, M, D)
    indicators = torch.nn.functional.normalize(torch.randn(2, 5, 6, generator=gen), dim=-1)
    questions = indicators[:, 3]  # best fit: clip 3
    for training in (False, True):
        tokens, index, _ = select_memories(questions, indicators, memories, 2, training=training)
        assert tokens.shape == (2, 2 * 3, 4)
        assert (index[:, 0] < index[:, 1]).all()  # time order
    tokens, index, relevance = select_memories(questions, indicators, memories, 2, False)
    assert (index == 3).any(dim=1).all()
    assert torch.equal(tokens[0].view(2, 3, 4), memories[0, index[0]])
    cosine = torch.einsum("bq,bnq->bn", questions, indicators)
    assert torch.allclose(relevance, cosine.gather(1, index))  # the selected clips' fit
    short, index, relevance = select_memories(
        questions, indicators[:, :1], memories[:, :1], 2, False
    )
    assert short.shape == (2, 6, 4) and index[:, 1].eq(-1).all() and short[:, 3:].eq(0).all()
    assert relevance[:, 1].eq(0).all()


def test_select_memories_at_inference_reads_the_clips_select_clips_picks():
    """The held-out evaluation's selection is the query stage's (``select_clips``)."""
    gen = torch.Generator().manual_seed(2)
    memories = torch.randn(3, 6, 2, 4, generator=gen)  # (B, N, M, D)
    indicators = torch.nn.functional.normalize(torch.randn(3, 6, 5, generator=gen), dim=-1)
    parts = torch.nn.functional.normalize(torch.randn(3, 2, 5, generator=gen), dim=-1)
    for k in (3, 8):  # 8 > N: padded
        tokens, index, relevance = select_memories(parts, indicators, memories, k, False)
        picked, fit = select_clips(parts, indicators, k, temperature=0.1)
        assert torch.equal(index, picked) and torch.equal(relevance, fit)
        slots = tokens.view(3, k, 2, 4)
        for b in range(3):
            for slot, clip in enumerate(index[b].tolist()):
                want = memories[b, clip] if clip >= 0 else torch.zeros(2, 4)
                assert torch.equal(slots[b, slot], want)


def test_selection_bias_forces_the_oracle_s_evidence_in_and_keeps_hidden_clips_out():
    gen = torch.Generator().manual_seed(1)
    memories = torch.randn(2, 6, 3, 4, generator=gen)  # (B, N, M, D)
    indicators = torch.nn.functional.normalize(torch.randn(2, 6, 6, generator=gen), dim=-1)
    questions = indicators[:, 3]  # best fit: clip 3
    positives = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    hidden = torch.zeros(2, 6, dtype=torch.bool)
    hidden[0, 0] = hidden[0, 3] = True  # row 0: an evidence clip and the best fit kept out
    assert selection_bias(positives, None, None) is None
    bias = selection_bias(positives, torch.tensor([True, True]), hidden)
    for seed in range(5):  # Gumbel noise: any draw
        _, index, _ = select_memories(
            questions, indicators, memories, 2, True, bias=bias,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        assert 1 in index[0] and 0 not in index[0] and 3 not in index[0]
        assert 4 in index[1]  # forced; row 1 hides nothing
    no_oracle = selection_bias(positives, None, hidden)
    assert no_oracle[1].eq(0).all() and no_oracle[0, 3] < -100 and no_oracle[0, 1] == 0


def test_gumbel_selection_passes_gradient_to_indicators():
    gen = torch.Generator().manual_seed(0)
    memories = torch.randn(1, 4, 2, 3, generator=gen)
    indicators = torch.randn(1, 4, 5, generator=gen).requires_grad_()
    questions = torch.nn.functional.normalize(torch.randn(1, 5, generator=gen), dim=-1)
    tokens, _, _ = select_memories(questions, indicators, memories, 2, training=True)
    (tokens * torch.randn_like(tokens)).sum().backward()
    assert indicators.grad is not None and indicators.grad.abs().sum() > 0


def test_encode_video_clips_carries_memory(model, make_clips):
    frames = make_clips(3, seed=0)  # one video of N=3 clips
    memories, indicators = encode_video_clips(model, frames)
    assert memories.shape == (3, model.memory_tokens, model.hidden_size)
    assert indicators.shape == (3, model.indicator_dim)
    with torch.no_grad():  # the chain equals ingest's clip-by-clip encoding
        first, _ = model.encode_clips(frames[:1])
        second, ind = model.encode_clips(frames[1:2], first)
    assert torch.allclose(memories[1], second[0], atol=1e-5)
    assert torch.allclose(indicators[1], ind[0], atol=1e-5)
    reset, _ = encode_video_clips(model, frames, reset_every_clip=True)
    assert not torch.allclose(reset[1], memories[1], atol=1e-5)
    batched, _ = encode_video_clips(model, frames.unsqueeze(0).expand(2, -1, -1, -1, -1, -1))
    assert batched.shape == (2, 3, model.memory_tokens, model.hidden_size)


def test_training_losses_add_the_clip_label_loss(make_clips):
    model = build_default_model(seed=1).train()  # a fresh copy: gradients are written
    answerer = make_answerer(
        memory_dim=model.hidden_size, memory_tokens=model.memory_tokens, question_dim=64
    )
    head = ClipLabelHead(model.hidden_size, n_labels=6)
    frames = make_clips(3, seed=1).unsqueeze(0)  # (B=1, N=3, T, H, W, 3)
    batch = dict(
        frames=frames,
        questions=["When does a red circle move left?", "How many blue squares?"],
        video_of=torch.tensor([0, 0]),
        positives=torch.tensor([[True, False, False], [False, True, True]]),
        answer_ids=answerer.encode_answers([["0", "-", "1"], ["2"]]),
        clip_labels=torch.tensor([[[1.0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1], [0, 0, 1, 1, 0, 0]]]),
    )
    plain = training_losses(model, answerer, **batch, k=2)
    assert "aux" not in plain
    losses = training_losses(model, answerer, **batch, k=2, aux_head=head, aux_weight=0.5)
    assert losses["aux"] > 0
    assert torch.isclose(losses["loss"], losses["answer"] + losses["align"] + 0.5 * losses["aux"])
    losses["loss"].backward()
    assert head.net[0].weight.grad is not None
    assert model.streaming.start_memory.grad.abs().sum() > 0


def test_memory_states_are_the_hidden_states_at_the_memory_positions():
    memories, question = torch.randn(2, 6, 16), torch.randn(2, 8)
    texts = ["Which came first, the red circle or the blue square?", "How many stars?"]
    ids = torch.tensor([[5, 2, 0], [6, 2, 0]])
    for question_first in (False, True):
        answerer = make_answerer(question_first=question_first).eval()
        loss, states = answerer(memories, question, ids, questions=texts, memory_states=True)
        assert torch.isclose(loss, answerer(memories, question, ids, questions=texts))
        prefix, mask = answerer.prefix(memories, question, questions=texts)
        hidden = answerer.lm(inputs_embeds=prefix, attention_mask=mask).last_hidden_state
        start = answerer.memory_offset()
        assert states.shape == (2, 6, answerer.config.lm().hidden_size)
        assert torch.allclose(states, hidden[:, start : start + 6], atol=1e-5)


def test_training_losses_add_the_evidence_place_loss(make_clips):
    model = build_default_model(seed=1).train()
    answerer = make_answerer(
        memory_dim=model.hidden_size, memory_tokens=model.memory_tokens, question_dim=64
    )
    head = EvidencePlaceHead(answerer.config.lm().hidden_size, model.memory_tokens, depth=2)
    evidence = torch.zeros(2, 3, 8, dtype=torch.bool)
    evidence[0, 0, 0] = evidence[1, 2, 1] = True  # (Bq, N, STACK_DEPTH)
    batch = dict(
        frames=make_clips(3, seed=1).unsqueeze(0),
        questions=["What colour came before the red circle?", "Which came first?"],
        video_of=torch.tensor([0, 0]),
        positives=torch.tensor([[True, False, False], [False, True, True]]),
        answer_ids=answerer.encode_answers([["red"], ["blue", "square"]]),
        stack_evidence=evidence,
    )
    assert "place" not in training_losses(model, answerer, **batch, k=2)
    losses = training_losses(model, answerer, **batch, k=2, place_head=head, place_weight=0.5)
    assert losses["place"] > 0
    assert torch.isclose(losses["loss"], losses["answer"] + losses["align"] + 0.5 * losses["place"])
    losses["loss"].backward()
    assert head.net.weight.grad.abs().sum() > 0
    assert answerer.memory_in.weight.grad.abs().sum() > 0


def test_select_memories_shares_k_among_question_parts():
    """Queries (B, A, Q): each part's best clip is selected, and each clip's relevance is
    its best part's fit; one query ranking alone takes only its own best clips."""
    eye = torch.eye(6)
    indicators = torch.stack([eye[0], 0.6 * eye[0] + 0.8 * eye[1], eye[2], eye[3]])
    indicators = torch.nn.functional.normalize(indicators, dim=-1).unsqueeze(0)  # (1, N=4, 6)
    memories = torch.randn(1, 4, 2, 3)
    first, second = eye[0], torch.nn.functional.normalize(eye[3] + 0.1 * eye[0], dim=-1)
    _, alone, _ = select_memories(first[None], indicators, memories, 2, training=False)
    assert alone.tolist() == [[0, 1]]  # both fit the first part
    parts = torch.stack([first, second]).unsqueeze(0)  # (1, A=2, 6)
    _, shared, relevance = select_memories(parts, indicators, memories, 2, training=False)
    assert shared.tolist() == [[0, 3]]
    best = torch.einsum("aq,nq->an", parts[0], indicators[0]).amax(dim=0)
    assert torch.allclose(relevance[0], best[[0, 3]])
    gen = torch.Generator().manual_seed(0)  # training: the same turns, Gumbel-perturbed
    _, trained, _ = select_memories(
        parts, indicators, memories, 2, training=True, temperature=0.01, generator=gen
    )
    assert trained.tolist() == [[0, 3]]


def test_readable_answer_joins_digits_and_maps_slot_ranges_to_seconds():
    slots = [(0.0, 16.0), (32.0, 48.0), (48.0, 64.0)]  # the selected clips, in time order
    assert readable_answer("1 2", slots) == "12"
    assert readable_answer("blue triangle", slots) == "blue triangle"
    assert readable_answer("2 - 3", slots) == "32-64"
    assert readable_answer("1 - 1", slots) == "0-16"
    assert readable_answer("2 - 9", slots) == "2-9"  # a slot the selection does not have
    assert readable_answer("", slots) == ""
