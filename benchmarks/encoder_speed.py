"""Encoder throughput: images/s of pretrained-backbone architectures and time per agent update with a frozen,
cached DINOv2 vs the scratch CNN, measured in the same run.

    python benchmarks/encoder_speed.py                       # DINOv2-S/14 and CLIP-B/32 at 224 px, batch 32
    python benchmarks/encoder_speed.py --batch 8 --iters 2   # quicker

1. Forward and forward+backward images/s for DINOv2-S/14 (``Dinov2Config`` with the ``facebook/dinov2-small``
   sizes) and CLIP-B/32 (``CLIPVisionConfig`` defaults = ``openai/clip-vit-base-patch32``), random init (the
   architecture is what costs time; no weights are downloaded).
2. Seconds per agent update (B x T, 64 px observations) with ``encoder=cnn`` and with ``encoder=dinov2``
   frozen + feature cache (the backbone never runs inside the update; features come from replay), same model
   size, same batch; prints the ratio dinov2 / cnn (target <= 1.3).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _time(fn, iters: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def backbone_throughput(batch: int, iters: int, size: int) -> dict[str, dict[str, float]]:
    """images/s forward and forward+backward of DINOv2-S/14 and CLIP-B/32 at ``size`` px."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    models = {
        "dinov2-s14": Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                               intermediate_size=1536, patch_size=14, image_size=518)),
        "clip-b32": CLIPVisionModel(CLIPVisionConfig()),
    }
    x = torch.randn(batch, 3, size, size)
    out = {}
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            fwd = _time(lambda m=model: m(pixel_values=x), iters)
        model.train()
        bwd = _time(lambda m=model: m(pixel_values=x).last_hidden_state.mean().backward(), iters)
        params = sum(p.numel() for p in model.parameters())
        out[name] = {"params_M": params / 1e6, "fwd_img_s": batch / fwd, "fwd_bwd_img_s": batch / bwd}
    return out


def update_times(batch: int, length: int, iters: int, size: str, feature: str) -> dict[str, float]:
    """Seconds per ``Agent.train_step`` for the CNN and a frozen cached DINOv2-S (random init, saved and
    loaded through the real ``from_pretrained`` path)."""
    from transformers import Dinov2Config, Dinov2Model

    from mbrl.agent import Agent
    from mbrl.config import build_config

    tmp = Path(tempfile.mkdtemp(prefix="dinov2-s-random-"))
    Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                             patch_size=14, image_size=518)).save_pretrained(tmp)
    results = {}
    dino = {"encoder": "dinov2", "encoder_path": str(tmp), "encoder_mode": "frozen", "encoder_feature": feature}
    for name, extra in {"cnn": {}, "dinov2-frozen-cached": dino}.items():
        cfg = build_config({"size": size, **extra})
        agent = Agent(cfg, action_dim=6)
        data = {"image": torch.randint(0, 255, (batch, length, 64, 64, 3), dtype=torch.uint8),
                "action": torch.rand(batch, length, 6) * 2 - 1, "reward": torch.rand(batch, length),
                "is_first": torch.zeros(batch, length, dtype=torch.bool),
                "is_terminal": torch.zeros(batch, length, dtype=torch.bool)}
        if agent.caches_features:
            flat = data["image"].flatten(0, 1)
            feats = torch.cat([agent.encode_features(chunk) for chunk in flat.split(64)])
            data["features"] = feats.view(batch, length, -1).half()
        results[name] = _time(lambda a=agent, d=data: a.train_step(d), iters)
    results["ratio"] = results["dinov2-frozen-cached"] / results["cnn"]
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="images per backbone forward")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--update-batch", type=int, default=16)
    p.add_argument("--update-length", type=int, default=64)
    p.add_argument("--update-iters", type=int, default=2)
    p.add_argument("--size", default="S", help="agent size preset for the update comparison")
    p.add_argument("--feature", default="patch", help="DINOv2 feature choice for the update comparison")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"\nbackbones at {args.image_size} px, batch {args.batch} (random init):")
    for name, r in backbone_throughput(args.batch, args.iters, args.image_size).items():
        print(f"  {name:12s} {r['params_M']:6.1f} M params  forward {r['fwd_img_s']:7.1f} img/s  "
              f"forward+backward {r['fwd_bwd_img_s']:7.1f} img/s")
    b, t = args.update_batch, args.update_length
    print(f"\nagent update, size {args.size}, B x T = {b} x {t}, 64 px:")
    r = update_times(b, t, args.update_iters, args.size, args.feature)
    print(f"  cnn                    {r['cnn']:.2f} s/update")
    print(f"  dinov2 frozen + cache  {r['dinov2-frozen-cached']:.2f} s/update  (feature {args.feature})")
    print(f"  ratio dinov2 / cnn     {r['ratio']:.2f}x  (target <= 1.3x)")


if __name__ == "__main__":
    main()
