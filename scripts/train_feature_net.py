"""Train the small LeNet whose features define minidiff's FID/KID, on the MNIST-5k training split only.

    python scripts/train_feature_net.py        # ~1 min on 2 CPU cores

Writes ``minidiff/assets/lenet_mnist5k.pt`` (fp16 weights, < 1 MB) and ``lenet_mnist5k.json`` (how it was
trained and its accuracy on the 1,000 held-out digits, which it never saw). Random shifts of up to
2 pixels are the only augmentation.
"""

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidiff.data import mnist5k
from minidiff.metrics import INFO_FILE, WEIGHTS_FILE, LeNetFeatures

EPOCHS, BATCH, LR, SEED = 30, 128, 2e-3, 0


def shift(x, g, max_shift=2):
    B = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    rows = dy[:, None] + torch.arange(28)[None]
    cols = dx[:, None] + torch.arange(28)[None]
    b = torch.arange(B)[:, None, None]
    return pad[b, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def main():
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    tr, te = mnist5k("train"), mnist5k("test")
    net = LeNetFeatures()
    opt = torch.optim.AdamW(net.parameters(), LR, weight_decay=1e-4)
    steps = EPOCHS * (len(tr) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
    t0 = time.time()
    for ep in range(EPOCHS):
        perm = torch.randperm(len(tr), generator=g)
        for i in range(len(tr) // BATCH):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            loss = F.cross_entropy(net(shift(tr.x[idx], g)), tr.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            acc = (net.eval()(te.x).argmax(1) == te.y).float().mean().item()
        net.train()
        print(f"epoch {ep + 1:2d}  loss {loss.item():.3f}  held-out acc {acc:.4f}")
    out = Path(__file__).resolve().parents[1] / "minidiff" / "assets"
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, out / WEIGHTS_FILE)
    # accuracy of the weights as shipped (fp16 -> fp32)
    net.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    with torch.no_grad():
        acc = (net.eval()(te.x).argmax(1) == te.y).float().mean().item()
    info = {"trained_on": "mnist5k train split (4,000 digits)", "evaluated_on": "mnist5k test split (1,000 digits)",
            "heldout_accuracy": round(acc, 4), "epochs": EPOCHS, "batch": BATCH, "lr": LR, "seed": SEED,
            "augmentation": "random shifts up to 2 px", "torch": torch.__version__,
            "train_seconds": round(time.time() - t0, 1)}
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    print(f"wrote {out / WEIGHTS_FILE} ({(out / WEIGHTS_FILE).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
