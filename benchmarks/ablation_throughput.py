"""Training throughput of the ablation variants, measured side by side in one run.

    python benchmarks/ablation_throughput.py [--batch 32] [--rounds 5] [--threads 2]

Each variant is the embedded default model's architecture with one switch flipped
(docs/ablations.md), freshly initialised, trained as in the default recipe's joint stage (the
autoencoder and decoder projector frozen). The variants take turns on the same batches of Shapes
samples (round-robin, so drifting machine load hits them alike); the median over rounds of
samples/s of one optimizer step (forward, backward, AdamW) is printed with its ratio to the
baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cheers.config import ABLATIONS, CheersConfig
from cheers.data.loader import DataSource, TrainingData
from cheers.model import Cheers
from cheers.shapes.dataset import write_split
from cheers.tokenizer import CheersTokenizer
from cheers.training.objective import Objective, make_batch
from cheers.training.recipe import MODULE_GROUPS, NEVER_TRAINED

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "cheers" / "default_model"
# Frozen as in the default recipe's joint stage.
FROZEN = (*MODULE_GROUPS["vae"], *MODULE_GROUPS["decoder_projector"], *NEVER_TRAINED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = CheersConfig.from_json(DEFAULT_MODEL)
    tokenizer = CheersTokenizer.from_folder(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_split(tmp, "train", args.batch * 4, seed=0, canvas=base.image_size)
        setups = {}
        for name, switches in ABLATIONS.items():
            config = dataclasses.replace(base, **switches).validate()
            torch.manual_seed(0)
            model = Cheers(config).init_weights().train()
            params = []
            for key, param in model.named_parameters():
                param.requires_grad_(not key.startswith(FROZEN))
                if param.requires_grad:
                    params.append(param)
            data = TrainingData([DataSource(str(path))], tokenizer, config.tokens_per_image, 512)
            items = list(enumerate(data.examples))
            batches = [
                make_batch(items[i : i + args.batch], tokenizer, config, 0, 0.2)
                for i in range(0, len(items), args.batch)
            ]
            setups[name] = (Objective(model), torch.optim.AdamW(params, lr=1e-4), batches)

        def step(name: str, index: int) -> float:
            objective, optimizer, batches = setups[name]
            batch = batches[index % len(batches)]
            started = time.perf_counter()
            sums = objective(batch)
            loss = sums.text / max(sums.text_count, 1) + sums.image / max(sums.image_count, 1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return len(batch.examples) / (time.perf_counter() - started)

        for name in setups:
            for i in range(args.warmup):
                step(name, i)
        rates: dict[str, list[float]] = {name: [] for name in setups}
        for r in range(args.rounds):
            for name in setups:
                rates[name].append(step(name, r))

    print(f"training step, batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds")
    print("| variant | LLM tokens / image | samples/s (median) | vs baseline |")
    print("|---|---|---|---|")
    baseline = statistics.median(rates["baseline"])
    for name, values in rates.items():
        config = dataclasses.replace(base, **ABLATIONS[name])
        rate = statistics.median(values)
        print(f"| {name} | {config.tokens_per_image} | {rate:.1f} | {rate / baseline:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
