"""Training: the loss and schedules against hand computations, metrics against a naive implementation,
checkpoints and resume, and short CPU runs on synthetic dense data with a planted structure."""

import json
import math

import numpy as np
import pytest
import torch

from mlsr.data.lsr42 import Pairs, load_dense_dataset, write_vectors
from mlsr.errors import InputError, ModelLoadError
from mlsr.models.head import SparseHead
from mlsr.evaluation.metrics import active_terms, flops, score_rankings
from mlsr.models.encoder import to_csr
from mlsr.training.checkpoint import load_checkpoint, save_checkpoint
from mlsr.training.config import TrainConfig
from mlsr.training.head_init import new_head
from mlsr.training.loop import build_optimizer, train, train_step
from mlsr.training.objectives import distillation_loss, l1, lr_factor, mask_ratio, reg_weight, teacher_scores
from mlsr.training.validation import validate


def retrieval_metrics(ranked, relevant):
    """R@1/5/10 and MRR@10 of ranked rows against one relevant row per query, by the evaluation loop's metrics."""
    ids = [str(i) for i in range(len(relevant))]
    qrels = {qid: {str(int(doc)): 1} for qid, doc in zip(ids, relevant)}
    doc_ids = [str(i) for i in range(int(np.max(ranked)) + 1)]
    return score_rankings(ranked, ids, doc_ids, qrels, ["R@1", "R@5", "R@10", "MRR@10"])

# Eight topics; every caption of an image of topic k is made of topic k's words.
TOPICS = [["dog", "ball", "grass"], ["cat", "sofa", "pillow"], ["boat", "lake", "sail"], ["pizza", "cheese", "plate"],
          ["train", "station", "rail"], ["horse", "field", "fence"], ["bike", "street", "helmet"],
          ["kite", "beach", "wind"]]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = SPECIAL + ["a"] + [word for topic in TOPICS for word in topic] + [f"filler{i}" for i in range(200)]
FAST = dict(batch_size=32, hidden_size=32, lr=1e-2, proj_lr=1e-2, eval_batch_size=256)  # random init needs higher lrs


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A real BertTokenizer over 230 word pieces: the topic words, 'a', and fillers that only expansion can use."""
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)}).save_pretrained(folder)
    return folder


def make_planted_data(folder, *, per_topic=(8, 4), captions=2, dim=32, seed=0, gap=3.0):
    """Paired dense vectors with a planted structure, written in the published layout.

    Item u = topic centroid + item noise (first dim-8 dims). Images are normalize(g_img + u), captions
    normalize(g_txt + u + small noise), with large orthogonal modality offsets g_img, g_txt (the
    "modality gap" of real image-text models): the dense teacher ranks by u, while an untrained head's
    features are dominated by the offsets, so it ranks near chance.
    """
    rng = np.random.default_rng(seed)
    sub = dim - 8
    centroids = rng.normal(size=(len(TOPICS), sub))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    g_img, g_txt = np.zeros(dim), np.zeros(dim)
    g_img[sub : sub + 4], g_txt[sub + 4 :] = rng.normal(size=4), rng.normal(size=4)
    g_img *= gap / np.linalg.norm(g_img)
    g_txt *= gap / np.linalg.norm(g_txt)
    images, image_vectors, text_vectors = [], [], []
    for split, count in zip(("train", "val"), per_topic):
        for topic, words in enumerate(TOPICS):
            for _ in range(count):
                u = np.zeros(dim)
                u[:sub] = centroids[topic] + 0.6 * rng.normal(size=sub) / math.sqrt(sub)
                u /= np.linalg.norm(u)
                image_vectors.append((g_img + u) / np.linalg.norm(g_img + u))
                sentences = []
                for _ in range(captions):
                    t = g_txt + u + 0.15 * rng.normal(size=dim) / math.sqrt(dim)
                    sentences.append({"raw": "a " + " ".join(rng.permutation(words)), "sentid": len(text_vectors)})
                    text_vectors.append(t / np.linalg.norm(t))
                images.append({"imgid": len(images), "filename": f"{len(images)}.jpg", "filepath": "", "split": split,
                               "sentences": sentences, "topic": topic})
    folder.mkdir(parents=True, exist_ok=True)
    write_vectors(folder / "img_embs.parquet", [str(i) for i in range(len(images))], np.array(image_vectors))
    write_vectors(folder / "text_embs.parquet", [str(i) for i in range(len(text_vectors))], np.array(text_vectors))
    (folder / "dataset_meta.json").write_text(json.dumps({"images": images}))
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return load_dense_dataset(make_planted_data(tmp_path_factory.mktemp("planted")))


@pytest.fixture(scope="module")
def trained(planted, tiny_tokenizer_dir, tmp_path_factory):
    """Two short CPU runs (20 epochs of 4 batches): light and heavy L1."""
    runs = {}
    for name, weight in (("light", 1e-3), ("heavy", 3e-2)):
        out = tmp_path_factory.mktemp(name) / "head"
        config = TrainConfig(epochs=20, q_reg=weight, d_reg=weight, **FAST)
        runs[name] = train(planted, out, config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu")
    return runs


# -- formulas ---------------------------------------------------------------------------------------------


def test_distillation_loss_equals_a_hand_computation():
    texts = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.5]])
    images = torch.tensor([[0.5, 0.0, 1.0], [0.0, 2.0, 0.0]])
    text_dense = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    image_dense = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    temperature = 0.5

    def ce(logits_row, target_row):  # -sum p log softmax(logits)
        norm = math.log(sum(math.exp(v) for v in logits_row))
        return -sum(p * (v - norm) for p, v in zip(target_row, logits_row))

    def softmax(row):
        exps = [math.exp(v) for v in row]
        return [e / sum(exps) for e in exps]

    sparse = [[sum(a * b for a, b in zip(t, i)) for i in images.tolist()] for t in texts.tolist()]  # [[2.5, 0], [.5, 2]]
    dense = [[sum(a * b for a, b in zip(t, i)) / temperature for i in image_dense.tolist()] for t in text_dense.tolist()]
    t2i = sum(ce(sparse[r], softmax(dense[r])) for r in range(2)) / 2
    columns = lambda m: [[m[r][c] for r in range(2)] for c in range(2)]  # noqa: E731
    i2t = sum(ce(columns(sparse)[c], softmax(columns(dense)[c])) for c in range(2)) / 2
    got = distillation_loss(texts, images, text_dense, image_dense, temperature)
    assert got.item() == pytest.approx((t2i + i2t) / 2, rel=1e-6)
    # At the paper's temperature the teacher is one-hot on its best match, which need not be the pair's own:
    # caption 1 is closer to image 0 (0.8) than to its own image 1 (0.0); both images are closest to caption 0.
    sharp = distillation_loss(texts, images, text_dense, image_dense, 1e-3).item()
    hard = (ce(sparse[0], [1, 0]) + ce(sparse[1], [1, 0]) + ce(columns(sparse)[0], [1, 0]) + ce(columns(sparse)[1], [1, 0])) / 4
    assert sharp == pytest.approx(hard, rel=1e-6)
    assert l1(torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, 0.0]])).item() == pytest.approx((3.0 + 0.5) / 2)


def test_the_teacher_scores_in_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(64, 256, generator=generator), dim=1)
    image = torch.nn.functional.normalize(text + 0.5 * torch.randn(64, 256, generator=generator), dim=1)
    exact = text @ image.T / 1e-3  # float32, no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what train_step runs the loss in with --amp bf16
        ours = teacher_scores(text, image, 1e-3)
        in_autocast = text.float() @ image.float().T / 1e-3  # the teacher as it was computed before
    assert ours.dtype == torch.float32 and torch.equal(ours, exact)
    assert (in_autocast.float() - exact).abs().max() > 0.1  # bf16 rounding at temperature 1e-3: logits move


def test_training_masks_are_the_reference_s_by_default_and_the_search_masks_on_request(tokenizer_dir):
    """train.py's collator keeps [CLS]/[SEP] and truncates at 512; `retrieval` masks are the raw word pieces that
    Encoder.encode_text(mode="no_expand") searches with."""
    from mlsr.models.tokenizer import load_tokenizer
    from mlsr.training.loop import _caption_tokens

    tokenizer, _ = load_tokenizer(str(tokenizer_dir))
    captions = ["A dog (brown) runs.", "Two cats: on a mat!", "ok", " ".join(["dog"] * 600)]
    ids, mask = _caption_tokens(tokenizer, captions, "cpu")  # the default: "reference"
    own, _ = _caption_tokens(tokenizer, captions, "cpu", "retrieval")
    for row, raw in enumerate(captions):
        pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(raw))
        kept = ids[row][mask[row].bool()].tolist()
        assert kept == tokenizer(raw, truncation=True, max_length=512)["input_ids"]
        assert kept[0] == tokenizer.cls_token_id and kept[-1] == tokenizer.sep_token_id
        assert own[row][own[row] != 0].tolist() == pieces[:128]
    assert int(mask[3].sum()) == 512


def test_an_epoch_keeps_its_partial_last_batch_as_the_reference_does(planted, tiny_tokenizer_dir, tmp_path):
    """10 pairs at batch 4: 3 steps (the reference's DataLoader), 2 with `last_batch="drop"`; a whole run counts them."""
    from mlsr.data.lsr42 import Pairs
    from mlsr.models.tokenizer import load_tokenizer
    from mlsr.training.loop import _Batches

    tokenizer, _ = load_tokenizer(str(tiny_tokenizer_dir))
    pairs = planted.pairs(["train"])
    ten = Pairs(pairs.text_rows[:10], pairs.image_rows[:10], pairs.captions[:10])
    assert _Batches.of(planted, ten, tokenizer, TrainConfig(batch_size=4), "cpu").per_epoch == 3
    assert _Batches.of(planted, ten, tokenizer, TrainConfig(batch_size=4, last_batch="drop"), "cpu").per_epoch == 2
    steps = []
    config = TrainConfig(epochs=2, **{**FAST, "batch_size": 30})  # 128 pairs: 5 steps an epoch (4 full, 1 of 8)
    train(planted, tmp_path / "head", config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu",
          progress=lambda step, total: steps.append((step, total)))
    assert len(pairs) == 128 and steps == [(step, 10) for step in range(1, 11)]


def test_the_regulariser_weighs_captions_and_images_each_by_its_own_weight(planted):
    """train_step's regulariser against a hand computation from the head's outputs before the step."""
    import copy

    head = new_head(32, len(WORDS), hidden_size=16, seed=2)
    texts, images = torch.from_numpy(planted.text_vectors[:8]), torch.from_numpy(planted.image_vectors[:8])
    ids = torch.tensor([[6, 7, 8, 0]] * 8)  # three topic words; the fourth position is padding
    attention = torch.tensor([[1, 1, 1, 0]] * 8)
    with torch.no_grad():
        caption_weights, image_weights = head(texts).numpy().astype(np.float64), head(images).numpy().astype(np.float64)
    masked = np.zeros_like(caption_weights)
    masked[:, [6, 7, 8]] = caption_weights[:, [6, 7, 8]]
    l1_images = np.abs(image_weights).sum(axis=1).mean()
    assert (image_weights > 0).any(axis=1).all()
    for q_weight, d_weight, captions in [(0.0, 0.7, caption_weights), (0.3, 0.0, caption_weights),
                                         (0.2, 0.05, caption_weights), (0.0, 0.7, masked), (0.4, 0.0, masked)]:
        l1_captions = np.abs(captions).sum(axis=1).mean()
        assert abs(l1_captions - l1_images) > 0.02 * l1_images  # a swap of the two weights would show (rel=1e-5)
        fresh = copy.deepcopy(head)
        use_mask = captions is masked
        loss, distill, reg, caption_terms, image_terms = train_step(
            fresh, build_optimizer(fresh, TrainConfig(**FAST)), texts, images, input_ids=ids if use_mask else None,
            attention_mask=attention if use_mask else None, q_weight=q_weight, d_weight=d_weight, temperature=1e-3,
        ).tolist()
        assert reg == pytest.approx((q_weight * l1_captions + d_weight * l1_images) / 2, rel=1e-5)
        assert loss == pytest.approx(distill + reg, rel=1e-6)
        assert caption_terms == pytest.approx((captions > 0).sum(axis=1).mean())
        assert image_terms == pytest.approx((image_weights > 0).sum(axis=1).mean())


def test_l1_warmup_is_quadratic_then_flat():
    assert reg_weight(0, 100, 1e-3) == 0.0
    assert reg_weight(50, 100, 1e-3) == pytest.approx(0.25e-3)
    assert reg_weight(100, 100, 1e-3) == pytest.approx(1e-3) == reg_weight(1000, 100, 1e-3)
    assert reg_weight(5, 0, 1e-3) == 1e-3  # no warm-up
    weights = [reg_weight(s, 100, 1.0) for s in range(101)]
    assert all(b >= a for a, b in zip(weights, weights[1:]))


def test_mask_ratio_falls_from_one_to_zero_by_95_percent_of_epochs():
    ratios = [mask_ratio(epoch, 20) for epoch in range(20)]
    assert ratios[0] == 1.0 and ratios[19] == 0.0
    assert ratios[10] == pytest.approx(1 - 10 / 19)
    assert all(b < a for a, b in zip(ratios, ratios[1:]))  # strictly falling until it reaches 0
    assert mask_ratio(96, 100) == 0.0 and mask_ratio(94, 100) == pytest.approx(1 - 94 / 95)


def test_learning_rate_warms_up_then_decays():
    assert [lr_factor(s, 100, 20) for s in (0, 10, 20, 60, 100)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_retrieval_metrics_equal_a_naive_implementation():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(30)[:10] for _ in range(200)])
    relevant = rng.integers(0, 30, size=200)
    naive = {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MRR@10": 0.0}
    for row, target in zip(ranked.tolist(), relevant.tolist()):
        if target in row:
            rank = row.index(target) + 1
            naive["R@1"] += rank <= 1
            naive["R@5"] += rank <= 5
            naive["R@10"] += 1
            naive["MRR@10"] += 1 / rank
    got = retrieval_metrics(ranked, relevant)
    assert got == pytest.approx({k: v / 200 for k, v in naive.items()})
    assert retrieval_metrics(np.array([[3, 1, 2]]), np.array([1])) == pytest.approx(
        {"R@1": 0.0, "R@5": 1.0, "R@10": 1.0, "MRR@10": 0.5})


# -- runs on the planted data --------------------------------------------------------------------------


def test_training_beats_the_untrained_head_and_chance(trained, planted):
    val_images = len(planted.pairs(["val"]).gallery()[0])
    history = trained["light"].history
    before, best = history[0]["val_R@1"], trained["light"].best["R@1"]
    print(f"planted data: R@1 random {1 / val_images:.3f}, untrained {before:.3f}, trained {best:.3f}")
    assert before < 0.2 and 1 / val_images < 0.05
    assert best >= 0.8 and best > before + 0.5
    assert [row["epoch"] for row in history] == list(range(21))


def test_a_larger_l1_weight_gives_fewer_active_terms(trained):
    light, heavy = trained["light"].history[-1], trained["heavy"].history[-1]
    assert heavy["val_query_terms"] < 0.5 * light["val_query_terms"]
    assert heavy["val_image_terms"] < 0.5 * light["val_image_terms"]


def test_l1_on_images_only_shrinks_images_and_on_captions_only_captions(planted, tiny_tokenizer_dir, tmp_path):
    runs = {}
    for name, q_reg, d_reg in (("images", 0.0, 0.3), ("captions", 0.3, 0.0)):
        config = TrainConfig(epochs=10, q_reg=q_reg, d_reg=d_reg, **FAST)
        result = train(planted, tmp_path / name, config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu")
        runs[name] = result.history[-1]
    images_only, captions_only = runs["images"], runs["captions"]
    print({name: (row["val_query_terms"], row["val_image_terms"]) for name, row in runs.items()})
    assert images_only["val_image_terms"] < 0.1 * images_only["val_query_terms"]
    assert captions_only["val_query_terms"] < 0.2 * captions_only["val_image_terms"]
    # the side without L1 keeps its terms: each shrinks only under its own weight
    assert images_only["val_query_terms"] > 5 * captions_only["val_query_terms"]
    assert captions_only["val_image_terms"] > 5 * images_only["val_image_terms"]


@pytest.mark.parametrize("search", ["sparse", "dense"])
def test_validation_costs_equal_the_metrics_module_on_the_same_vectors(trained, planted, search):
    head = SparseHead.from_pretrained(trained["light"].out)
    pairs = planted.pairs(["val"])
    gallery, _ = pairs.gallery()
    with torch.no_grad():
        captions = to_csr(head(torch.from_numpy(planted.text_vectors[pairs.text_rows])))
        images = to_csr(head(torch.from_numpy(planted.image_vectors[gallery])))
    got = validate(head, planted, pairs, search=search)
    assert got["search"] == search and (got["queries"], got["images"]) == (64, 32)
    assert got["query_terms"] == pytest.approx(active_terms(captions), rel=1e-6)
    assert got["image_terms"] == pytest.approx(active_terms(images), rel=1e-6)
    assert got["flops"] == pytest.approx(flops(captions, images), rel=1e-6)
    # FLOPs by their definition: the terms a caption and an image share, averaged over all caption-image pairs
    shared = (captions != 0).astype(np.float64) @ (images != 0).astype(np.float64).T
    assert got["flops"] == pytest.approx(shared.toarray().mean(), rel=1e-6)


def test_images_learn_the_words_of_their_topic(trained, planted, tiny_tokenizer_dir):
    """Expansion control makes captions score with their own words early on, so images learn to light them up."""
    from mlsr.models.tokenizer import load_tokenizer
    from mlsr.vocab import Vocabulary

    head = SparseHead.from_pretrained(trained["light"].out)
    vocab = Vocabulary.from_tokenizer(load_tokenizer(str(tiny_tokenizer_dir))[0])
    gallery, _ = planted.pairs(["val"]).gallery()
    with torch.no_grad():
        weights = head(torch.from_numpy(planted.image_vectors[gallery]))
    hits = 0
    for row, vector in zip(gallery, weights):
        top = {term for term, _ in vocab.decode(vector.numpy(), 3)}
        hits += len(top & set(TOPICS[planted.images[row]["topic"]]))
    share = hits / (3 * len(gallery))
    print(f"planted data: {share:.2f} of the images' top-3 terms are words of their topic")
    assert share > 0.3  # by chance: 3 topic words among 225 terms, about 0.04


def test_the_output_folder_is_a_head_with_its_card_and_log(trained, planted):
    result = trained["light"]
    head = SparseHead.from_pretrained(result.out)
    assert head.config.dense_size == 32 and head.vocab_size == len(WORDS)
    again = validate(head, planted, planted.pairs(["val"]))
    assert again["R@1"] == result.best["R@1"]  # the saved head is the best epoch's
    rows = [json.loads(line) for line in (result.out / "train_log.jsonl").read_text().splitlines()]
    assert len(rows) == 21 and rows[result.best_epoch]["best"] and rows[result.best_epoch]["val_R@1"] == result.best["R@1"]
    card = (result.out / "README.md").read_text()
    assert f"| {result.best_epoch} (best) | {result.best['R@1']:.4f} |" in card and "0 (untrained)" in card
    assert "random (no masked-LM)" in card
    summary = json.loads((result.out / "training.json").read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["data"]["train_pairs"] == 128


def test_sparse_and_dense_scoring_rank_alike(trained, planted):
    head = SparseHead.from_pretrained(trained["heavy"].out)
    pairs = planted.pairs(["val"])
    sparse, dense = (validate(head, planted, pairs, search=mode) for mode in ("sparse", "dense"))
    assert sparse["search"] == "sparse" and dense["search"] == "dense"
    # (costs come from the vectors whichever scorer ranks: test_validation_costs_equal_... checks them)
    for key in ("R@1", "R@5", "R@10", "MRR@10"):
        assert sparse[key] == pytest.approx(dense[key], abs=1e-6)


# -- checkpoints and resume --------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path, planted):
    head = new_head(32, len(WORDS), hidden_size=16, seed=1)
    optimizer = build_optimizer(head, TrainConfig(**FAST))
    pairs = planted.pairs(["train"])
    for _ in range(3):  # real optimizer state, and weights changed from their initial values
        train_step(head, optimizer, torch.from_numpy(planted.text_vectors[pairs.text_rows[:16]]),
                   torch.from_numpy(planted.image_vectors[pairs.image_rows[:16]]),
                   q_weight=1e-3, d_weight=1e-3, temperature=1e-3)
    save_checkpoint(tmp_path / "checkpoint", head, optimizer, {"epoch": 3, "note": "x"})
    loaded, optimizer_state, state = load_checkpoint(tmp_path / "checkpoint")
    assert state["epoch"] == 3 and state["note"] == "x"
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    original = optimizer.state_dict()
    fresh = build_optimizer(loaded, TrainConfig(**FAST))
    fresh.load_state_dict(optimizer_state)
    for param_id, values in original["state"].items():
        for key, value in values.items():
            assert torch.equal(value, fresh.state_dict()["state"][param_id][key]), (param_id, key)
    assert fresh.param_groups[1]["lr"] == optimizer.param_groups[1]["lr"]
    assert not list(tmp_path.glob(".checkpoint.*"))  # no staging left behind


def test_a_resumed_run_equals_an_uninterrupted_one(planted, tiny_tokenizer_dir, tmp_path):
    config = TrainConfig(epochs=4, q_reg=1e-2, d_reg=1e-2, **FAST)
    whole = train(planted, tmp_path / "whole", config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu")

    def stop_in_epoch_three(step, total):
        if step == 9:  # 4 steps per epoch: the run dies during epoch 3, after epoch 2 was saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(planted, tmp_path / "cut", config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu",
              progress=stop_in_epoch_three)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["epoch"] == 2
    resumed = train(planted, tmp_path / "cut", config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu", resume=True)
    final_whole, final_resumed = load_checkpoint(tmp_path / "whole" / "checkpoint"), load_checkpoint(tmp_path / "cut" / "checkpoint")
    for name, tensor in final_whole[0].state_dict().items():
        assert torch.equal(tensor, final_resumed[0].state_dict()[name]), name
    timing = {"train_seconds", "pairs_per_second"}
    strip = lambda rows: [{k: v for k, v in row.items() if k not in timing} for row in rows]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    # A run cut short before its first checkpoint leaves nothing that blocks starting again.
    def stop_at_once(step, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(planted, tmp_path / "early", config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu", progress=stop_at_once)
    assert not any((tmp_path / "early").iterdir())
    # Resuming a finished run does nothing more.
    again = train(planted, tmp_path / "cut", config, tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu", resume=True)
    assert strip(again.history) == strip(whole.history)


def test_bad_runs_are_refused_before_anything_changes(planted, tiny_tokenizer_dir, tmp_path, trained):
    out = trained["light"].out
    with pytest.raises(InputError, match="not empty.*resume=True continues it"):
        train(planted, out, TrainConfig(epochs=20, **FAST), tokenizer=str(tiny_tokenizer_dir), mlm=None)
    with pytest.raises(InputError, match="config.epochs"):
        train(planted, out, TrainConfig(epochs=30, **FAST), tokenizer=str(tiny_tokenizer_dir), mlm=None, resume=True)
    with pytest.raises(InputError, match="no training checkpoint"):
        train(planted, tmp_path / "new", TrainConfig(**FAST), tokenizer=str(tiny_tokenizer_dir), mlm=None, resume=True)
    with pytest.raises(InputError, match="validation captions"):
        train(planted, tmp_path / "new", TrainConfig(val_split="test", **FAST), tokenizer=str(tiny_tokenizer_dir), mlm=None)
    with pytest.raises(InputError, match="CUDA"):
        train(planted, tmp_path / "new", TrainConfig(amp="fp16", **FAST), tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu")
    with pytest.raises(InputError, match="batch size"):
        train(planted, tmp_path / "new", TrainConfig(epochs=1, batch_size=1), tokenizer=str(tiny_tokenizer_dir), mlm=None)
    assert not (tmp_path / "new").exists()


def test_bf16_mixed_precision_trains_on_cpu(planted, tiny_tokenizer_dir, tmp_path):
    result = train(planted, tmp_path / "bf16", TrainConfig(epochs=2, amp="bf16", **FAST),
                   tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu")
    assert all(np.isfinite(row["loss"]) for row in result.history[1:])


# -- initialisation from a masked-LM -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
def test_head_starts_from_a_masked_lm_head(kind, tiny_tokenizer_dir, tmp_path):
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    if kind == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(WORDS), dim=16, n_layers=1, n_heads=2, hidden_dim=32))
        layer_norm = model.vocab_layer_norm
    else:
        model = BertForMaskedLM(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=32))
        layer_norm = model.cls.predictions.transform.LayerNorm
    with torch.no_grad():  # make them distinguishable from a fresh LayerNorm
        layer_norm.weight.uniform_(0.5, 1.5)
        layer_norm.bias.uniform_(-0.1, 0.1)
        model.get_output_embeddings().bias.uniform_(-1, 0)
    model.save_pretrained(tmp_path / "mlm")
    head = new_head(32, len(WORDS), mlm=str(tmp_path / "mlm"), seed=0)
    assert head.config.hidden_size == 16 and head.config.mlm_head == str(tmp_path / "mlm")
    assert torch.equal(head.vocab_layer_norm.weight, layer_norm.weight)
    assert torch.equal(head.vocab_layer_norm.bias, layer_norm.bias)
    assert torch.equal(head.vocab_projector.weight, model.get_output_embeddings().weight)
    assert torch.equal(head.vocab_projector.bias, model.get_output_embeddings().bias)
    assert torch.equal(new_head(32, len(WORDS), mlm=str(tmp_path / "mlm"), seed=0).proj.weight, head.proj.weight)
    with pytest.raises(ModelLoadError, match="230 terms"):
        new_head(32, 230 + 1, mlm=str(tmp_path / "mlm"))


def test_other_masked_lms_are_refused(tmp_path):
    from transformers import RobertaConfig, RobertaForMaskedLM

    RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)).save_pretrained(tmp_path / "roberta")
    with pytest.raises(ModelLoadError, match="DistilBERT or BERT"):
        new_head(32, 50, mlm=str(tmp_path / "roberta"))


def test_gallery_of_pairs_is_used_for_validation(planted):
    pairs = planted.pairs(["val"])
    assert isinstance(pairs, Pairs) and len(pairs) == 64 and len(pairs.gallery()[0]) == 32


def test_data_by_hub_dataset_id_goes_through_the_cache(tmp_path, monkeypatch, tiny_tokenizer_dir):
    """A Hub id resolves as a *dataset* repo (datasets--owner--name in the cache), through the same loader."""
    import shutil

    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    repo = tmp_path / "cache" / "datasets--lsr42--planted-dense"
    shutil.copytree(make_planted_data(tmp_path / "local"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    data = load_dense_dataset("lsr42/planted-dense")
    assert (data.source, data.revision) == ("lsr42/planted-dense", commit)
    result = train("lsr42/planted-dense", tmp_path / "head", TrainConfig(epochs=1, **FAST),
                   tokenizer=str(tiny_tokenizer_dir), mlm=None, device="cpu")
    summary = json.loads((result.out / "training.json").read_text())
    assert summary["data"]["source"] == "lsr42/planted-dense" and summary["data"]["revision"] == commit
    with pytest.raises(ModelLoadError, match="could not be reached"):
        load_dense_dataset("lsr42/not-cached")
