from __future__ import annotations

import torch

from models.config import VMemModelConfig
from models.question import ByteTokenizer, QuestionEncoder


def test_tokenizer_bytes_specials_and_padding():
    tok = ByteTokenizer(max_length=8)
    out = tok(["ab", "é"])
    cls, sep, pad = tok.cls_id, tok.sep_id, tok.pad_id
    assert out["input_ids"].tolist() == [[cls, 97, 98, sep], [cls, 0xC3, 0xA9, sep]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    out = tok(["a", "bc"])
    assert out["input_ids"][0].tolist() == [cls, 97, sep, pad]
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 0]


def test_tokenizer_truncates_to_max_length():
    out = ByteTokenizer(max_length=6)(["x" * 100])
    assert out["input_ids"].shape == (1, 6)
    assert out["input_ids"][0, -1].item() == ByteTokenizer.sep_id


def test_encoder_unit_norm_and_batch_independent():
    torch.manual_seed(0)
    encoder = QuestionEncoder(VMemModelConfig().question(), indicator_dim=16).eval()
    texts = ["who speaks at the podium?", "a dog", "x" * 500]
    with torch.inference_mode():
        together = encoder(texts)
        alone = torch.cat([encoder([t]) for t in texts])
    assert together.shape == (3, 16)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], together[1])
