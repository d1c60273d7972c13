"""A training run for tests/test_kill_resume.py to kill: waits for "go" on stdin, then trains (and checkpoints
every step), resuming from the checkpoint folder if there is one, and writes the final weights to OUT.

    python tests/kill_target.py CKPT_DIR OUT STEPS
"""

import sys

import torch

torch.set_num_threads(1)

from minidiff import data  # noqa: E402
from minidiff.diffusion import ddpm  # noqa: E402
from minidiff.diffusion.schedules import make_schedule  # noqa: E402
from minidiff.nets import TimeMLP  # noqa: E402
from minidiff.train import TrainConfig, train  # noqa: E402


def main(ckpt_dir, out, steps):
    sched = make_schedule("linear", 50)
    torch.manual_seed(0)
    model = TimeMLP(2, 64, 3)
    sampler = data.TensorSampler(data.toy_2d("moons", 2048, seed=0), batch_size=128, seed=0)
    cfg = TrainConfig(steps=steps, lr=3e-3, warmup=10, ema_decay=0.95, ckpt_dir=ckpt_dir, ckpt_every=1, keep=3,
                      log_every=1, progress=False)
    print("ready", flush=True)
    sys.stdin.readline()   # the test starts its kill timer now, after the imports
    said = []

    def first_step(step, loss):   # tells the test that steps (and checkpoint writes) are under way
        if not said:
            said.append(step)
            print("stepping", step, flush=True)

    r = train(model, lambda m, x: ddpm.ddpm_loss(m, sched, x), sampler, cfg, callback=first_step)
    torch.save({"model": r.model.state_dict(), "ema": r.ema.state_dict(), "loss": torch.tensor(r.history["loss"]),
                "resumed_from": -1 if r.resumed_from is None else r.resumed_from}, out)
    print("done", r.step, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
