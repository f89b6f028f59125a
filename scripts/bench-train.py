#!/usr/bin/env python3
"""The PyTorch side of `nova-bench train`: the same model, data, batch order rule and optimizer
as `nova train --model mlp --dataset fashion-mnist`, on the CPU, printing Nova's progress
protocol (docs/training.md) so both sides are read by one parser.

    python3 scripts/bench-train.py --threads 2 --batch-size 64 --max-steps 600 --log-every 50
"""
import argparse
import gzip
import json
import sys
import time

import numpy as np
import torch

DATA = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(f"{DATA}/{name}.gz", "rb") as f:
        raw = f.read()
    n = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(n)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n).reshape(dims)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--max-steps", type=int, default=600)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    images = idx("train-images-idx3-ubyte").reshape(-1, 784).astype(np.float32) / 255.0
    labels = idx("train-labels-idx1-ubyte").astype(np.int64)
    # As nova train: the last tenth validates, the rest trains.
    cut = len(images) - len(images) // 10
    x, y = torch.from_numpy(images[:cut]), torch.from_numpy(labels[:cut])
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=a.learning_rate, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    step, epoch, out = 0, 0, sys.stdout
    since = (time.perf_counter(), 0)
    while step < a.max_steps:
        order = torch.randperm(len(x))
        for start in range(0, len(x), a.batch_size):
            if step >= a.max_steps:
                break
            rows = order[start:start + a.batch_size]
            loss = loss_fn(model(x[rows]), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % a.log_every == 0:
                now = time.perf_counter()
                rate = (step - since[1]) * a.batch_size / (now - since[0])
                since = (now, step)
                rec = {"kind": "step", "time": time.time(), "worker": 0, "step": step, "epoch": epoch,
                       "loss": loss.item(), "samplesPerSecond": rate}
                out.write(json.dumps(rec) + "\n")
                out.flush()
        epoch += 1
    out.write(json.dumps({"kind": "finished", "time": time.time(), "worker": 0, "step": step,
                          "epoch": epoch, "reason": "max-steps"}) + "\n")


if __name__ == "__main__":
    main()
