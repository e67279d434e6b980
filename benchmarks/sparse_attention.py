"""SpargeAttention2 block-sparse attention vs dense attention: mask quality, speed, and distillation.

Sections (all by default, or pick with --sections):
  masks    relative L1 error of the attention output vs dense on real activations (a
           quickstart-shaped model: --checkpoint, runs/quickstart, or the quality section's dense
           model; and SmolLM2; T=2048, every layer), for the top-k rule alone, the top-p rule
           alone and their union, each tuned to the same block sparsity;
  speed    forward and forward+backward time vs dense SDPA at 80/90/95% sparsity, both sparse
           kernels (gathered blocks through SDPA; compiled FlexAttention, forward only on CPU),
           and the time of mask prediction;
  quality  validation loss at 90% sparsity: the dense model, its weights under the sparse mask
           without training, after plain fine-tuning, and after distillation from the dense model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine, median_time, parser, print_table, write_json

from lmforge.ops.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_flex,
    block_sparsity,
    lagged_query_means,
    predict_block_mask,
)

BLOCK = 64


def _bisect(fn, target: float, lo: float, hi: float, steps: int = 18) -> float:
    """The argument in [lo, hi] where the decreasing function fn crosses `target`."""
    for _ in range(steps):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if fn(mid) > target else (lo, mid)
    return (lo * hi) ** 0.5


@torch.no_grad()
def layer_inputs(model, ids: torch.Tensor):
    """q, k, v of every softmax layer on the token ids (GQA heads expanded)."""
    positions = torch.arange(ids.shape[1])[None]
    hiddens = model.hidden_states(ids)
    for layer, h in zip(model.layers, hiddens[:-1]):
        q, k, v = layer.mixer.project(layer.mixer_norm(h), positions)
        groups = q.shape[1] // k.shape[1]
        yield q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)


@torch.no_grad()
def mask_quality(models: dict, target: float, t: int, block: int) -> list[dict]:
    rows = []
    for name, (model, ids) in models.items():
        errors = {"top-k": [], "top-p": [], "union": []}
        for q, k, v in layer_inputs(model, ids[:, :t]):
            dense = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            summary = lagged_query_means(q, block)

            def sparsity(top_k, top_p):
                return block_sparsity(predict_block_mask(summary, k, block, block, top_k, top_p, True), t, block, block)

            k_only = _bisect(lambda x: sparsity(x, 1e-9), target, 1e-4, 1.0)
            p_only = _bisect(lambda x: sparsity(1e-9, x), target, 1e-6, 1.0)
            p_union = _bisect(lambda x: sparsity(k_only / 2, x), target, 1e-6, 1.0)
            for rule, (top_k, top_p) in {"top-k": (k_only, 1e-9), "top-p": (1e-9, p_only), "union": (k_only / 2, p_union)}.items():
                mask = predict_block_mask(summary, k, block, block, top_k, top_p, True)
                out = block_sparse_attention(q, k, v, mask, block, block)
                errors[rule].append(float((out - dense).abs().sum() / dense.abs().sum()))
                errors.setdefault(f"{rule} sparsity", []).append(block_sparsity(mask, t, block, block))
        row = {"model": name, **{rule: sum(e) / len(e) for rule, e in errors.items()}}
        rows.append(row)
        print(f"  masks {name}: " + ", ".join(f"{r} {row[r]:.4f}" for r in ("top-k", "top-p", "union")), flush=True)
    return rows


def speed(quick: bool) -> list[dict]:
    lengths = [2048, 4096] if quick else [2048, 4096, 8192, 16384]
    rows = []
    torch.manual_seed(0)
    for t in lengths:
        q, k, v = (torch.randn(1, 8, t, 64) for _ in range(3))
        summary = lagged_query_means(q, BLOCK)
        repeats = 3 if t <= 4096 else 1
        dense_f = median_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), repeats)
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        dense_fb = median_time(lambda: F.scaled_dot_product_attention(qg, kg, vg, is_causal=True).sum().backward(), repeats)
        for target in (0.8, 0.9, 0.95):
            mask = predict_block_mask(summary, k, BLOCK, BLOCK, 1 - target, 1e-9, True)
            predict = median_time(lambda: predict_block_mask(lagged_query_means(q, BLOCK), k, BLOCK, BLOCK, 1 - target, 1e-9, True),
                                  repeats)
            gather_f = median_time(lambda: block_sparse_attention(q, k, v, mask, BLOCK, BLOCK), repeats)
            gather_fb = median_time(lambda: block_sparse_attention(qg, kg, vg, mask, BLOCK, BLOCK).sum().backward(), repeats)
            flex_f = median_time(lambda: block_sparse_attention_flex(q, k, v, mask, BLOCK, BLOCK), repeats)
            row = {"T": t, "sparsity": block_sparsity(mask, t, BLOCK, BLOCK), "dense_fwd": dense_f, "dense_fwdbwd": dense_fb,
                   "flex_fwd": flex_f, "gather_fwd": gather_f, "gather_fwdbwd": gather_fb, "predict": predict,
                   "flex_speedup_fwd": dense_f / flex_f, "gather_speedup_fwdbwd": dense_fb / gather_fb,
                   "predict_share": predict / min(flex_f, gather_f)}
            rows.append(row)
            print(f"  speed T={t} sparsity {row['sparsity']:.2f}: flex fwd x{row['flex_speedup_fwd']:.2f}, "
                  f"gather fwd+bwd x{row['gather_speedup_fwdbwd']:.2f}", flush=True)
    return rows


def quality(quick: bool, checkpoint: str | None) -> tuple[dict, Path]:
    """Validation losses of the dense model, its weights under the sparse mask untrained, after plain
    fine-tuning and after distillation, and (the control for the extra training steps) the dense
    model fine-tuned the same steps; and the dense checkpoint used."""
    from lmforge.checkpoint import load_checkpoint
    from lmforge.config import load_run_config
    from lmforge.data.loader import eval_windows
    from lmforge.data.prepare import prepare_or_load
    from lmforge.eval.perplexity import evaluate
    from lmforge.model.transformer import Transformer
    from lmforge.train.distill import distill
    from lmforge.train.trainer import train

    work = Path(tempfile.mkdtemp(prefix="lmforge-sparse-"))
    seq, steps, tune = (256, 40, 10) if quick else (1024, 300, 1000)
    block, top_k, top_p = (16, 0.06 if quick else 0.03, 0.05)  # about 90% block sparsity at these lengths
    data_dir = Path("runs/benchmark-data")
    data = prepare_or_load(load_run_config("quickstart").data, data_dir, progress=False)
    shape = [f"data.dir={data_dir}", f"train.seq_len={seq}", "train.batch_size=4", "model.max_seq_len=2048",
             "train.compile=false", "train.eval_every=0"]
    if quick:
        shape += ["model.d_model=128", "model.n_heads=2"]
    if checkpoint is None:
        checkpoint = work / "dense"
        train(load_run_config("quickstart", shape + [f"train.out={checkpoint}", f"train.steps={steps}"]),
              overwrite=True, progress=False, log=lambda s: None)
    sparse = [f"model.sparse_block_q={block}", f"model.sparse_block_k={block}", f"model.sparse_top_k={top_k}",
              f"model.sparse_top_p={top_p}", f"train.steps={tune}", "train.lr=2e-3", f"train.warmup_steps={tune // 10}",
              f"train.seq_len={seq}", "train.batch_size=4", "train.eval_every=0"]
    windows = eval_windows(data.shard("val").tokens, seq, 32 * seq if quick else 0)
    token_bytes = data.tokenizer.token_byte_lengths()

    def score(model) -> tuple[float, float]:
        """Validation loss, and the block sparsity of the masks on one full-length window."""
        loss = evaluate(model, windows, token_bytes, batch_size=4)["loss"]
        with torch.no_grad():
            model(torch.as_tensor(windows[0][:seq], dtype=torch.long)[None])
        masks = [layer.mixer.last_mask for layer in model.layers if getattr(layer.mixer, "last_mask", None) is not None]
        return loss, sum(block_sparsity(m, seq, block, block) for m in masks) / len(masks) if masks else 0.0

    dense = load_checkpoint(checkpoint)
    dense_loss, _ = score(dense.model)
    cfg = dense.config.model
    untrained = Transformer(type(cfg)(**{**cfg.__dict__, "mixers": ["sparse"], "sparse_block_q": block, "sparse_block_k": block,
                                         "sparse_top_k": top_k, "sparse_top_p": top_p}))
    untrained.load_state_dict(dense.model.state_dict())
    none_loss, sparsity = score(untrained)
    out = {"dense": dense_loss, "sparse_untrained": none_loss, "sparsity": sparsity}
    for key, mixer, loss in (("finetuned", "sparse", "ce"), ("distilled", "sparse", "kl"), ("dense_finetuned", "softmax", "ce")):
        distill(checkpoint, work / key, mixer, None, loss, 0.0, sparse, progress=False)
        out[key] = score(load_checkpoint(work / key).model)[0]
    gap = out["sparse_untrained"] - out["dense"]
    for key in ("finetuned", "distilled"):
        out[f"{key}_recovered"] = (out["sparse_untrained"] - out[key]) / gap if gap > 0 else float("nan")
    return out, checkpoint


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default="masks,speed,quality")
    p.add_argument("--checkpoint", default=None, help="quickstart-shaped dense checkpoint for masks and quality (default: train one in the quality section; masks alone use runs/quickstart)")
    args = p.parse_args()
    sections = args.sections.split(",")
    out = {"benchmark": "sparse_attention", "quick": args.quick, "machine": machine()}
    dense_checkpoint = "runs/quickstart"
    if "quality" in sections:
        out["quality"], dense_checkpoint = quality(args.quick, args.checkpoint if args.checkpoint and Path(args.checkpoint).exists() else None)
        q = out["quality"]
        print(f"\nvalidation loss at {q['sparsity']:.0%} block sparsity: dense {q['dense']:.4f}, sparse untrained "
              f"{q['sparse_untrained']:.4f}, fine-tuned {q['finetuned']:.4f} ({q['finetuned_recovered']:.0%} of the gap), "
              f"distilled {q['distilled']:.4f} ({q['distilled_recovered']:.0%} of the gap); dense fine-tuned the same "
              f"steps {q['dense_finetuned']:.4f}")
    if "masks" in sections:
        from lmforge.data.readers import english_passage, read_stdlib
        from lmforge.interop.load import load_model
        from lmforge.interop.registry import model_path

        t = 1024 if args.quick else 2048
        block = t // 64  # 64 blocks: a 90% target is above the floor that the diagonal and sink blocks set
        models = {}
        quickstart = Path(args.checkpoint or dense_checkpoint)
        if (quickstart / "checkpoint").exists() or (quickstart / "config.json").exists():
            m = load_model(quickstart)
            text = "".join(d.text for _, d in zip(range(60), read_stdlib()))
            models["quickstart (code)"] = (m.model.eval(), torch.tensor([m.tokenizer.encode(text)[:t]]))
        if model_path("smollm2-135m").is_file():
            m = load_model("smollm2-135m")
            models["SmolLM2-135M (English)"] = (m.model.eval(), torch.tensor([m.tokenizer.encode(english_passage(8 * t))[:t]]))
        out["masks"] = mask_quality(models, 0.9, t, block)
        print(f"\nmask quality at 90% block sparsity, T={t}, blocks of {block}: relative L1 error of the attention output "
              "(mean over layers; achieved sparsity beside)")
        print_table(out["masks"], [("model", "model", "s"), ("top-k", "top-k only", ".4f"), ("top-k sparsity", "sparsity", ".3f"),
                                   ("top-p", "top-p only", ".4f"), ("top-p sparsity", "sparsity", ".3f"),
                                   ("union", "top-k + top-p", ".4f"), ("union sparsity", "sparsity", ".3f")])
    if "speed" in sections:
        out["speed"] = speed(args.quick)
        print(f"\nattention speed, batch 1, 8 heads x 64, blocks of {BLOCK}: seconds and speed-up over dense SDPA")
        print_table(out["speed"], [("T", "T", "d"), ("sparsity", "sparsity", ".2f"), ("dense_fwd", "dense fwd", ".3f"),
                                   ("flex_fwd", "flex fwd", ".3f"), ("flex_speedup_fwd", "flex x", ".2f"),
                                   ("dense_fwdbwd", "dense f+b", ".3f"), ("gather_fwdbwd", "gather f+b", ".3f"),
                                   ("gather_speedup_fwdbwd", "gather f+b x", ".2f"), ("gather_fwd", "gather fwd", ".3f"),
                                   ("predict", "mask s", ".4f"), ("predict_share", "mask share", ".1%")])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
