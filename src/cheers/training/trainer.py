"""The training loop: stages, optimiser, schedule, logging, checkpoints, exact resume.

Runs in one process or under ``torchrun`` (DDP, or FSDP2 ``fully_shard``). Every process
builds the same global batch and takes its share; losses are normalised by counts summed over
all processes, so N processes compute the same update as one process with the same batch.
What a stage computes is its :class:`~cheers.training.stages.Stage`; what trains and what a
checkpoint holds (whole modules or LoRA adapters) is the run's tuning
(:mod:`cheers.training.tuning`); checkpoints are :mod:`cheers.training.checkpointing`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from cheers._files import atomic_write
from cheers.checkpoint import load_model
from cheers.config import CheersConfig
from cheers.data.loader import BatchStream, StreamState, TrainingData
from cheers.data.verify import verify_images
from cheers.errors import ConfigError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from cheers.training import checkpointing as ckpt
from cheers.training.checkpointing import latest_checkpoint
from cheers.training.objective import Objective
from cheers.training.recipe import TrainConfig, lr_at
from cheers.training.stages import Stage, make_stages
from cheers.training.tuning import make_tuning, set_trainable

__all__ = ["Dist", "Trainer", "latest_checkpoint", "set_trainable"]

METRIC_FIELDS = [
    "step",
    "stage",
    "stage_step",
    "lr",
    "loss",
    "text_loss",
    "image_loss",
    "grad_norm",
    "samples",
    "samples_per_s",
    "elapsed_s",
]


@dataclass
class Dist:
    """This process's place in the job (world size 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str | None) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
        dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return cls(rank, world, dev)

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class Trainer:
    """Runs a :class:`TrainConfig` from the start, or from its latest checkpoint."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = config
        self.dist = Dist.setup(config.run.device)
        self.out = Path(config.run.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.resume = ckpt.open_run(self.ckpt_dir, config, resume, self.dist.main)
        _check_output_dir(self.out)
        self.tuning = make_tuning(config.model.lora, config.model.from_pretrained)
        self.tokenizer = self._tokenizer()
        self.model = self._build_model()
        self.data = TrainingData(
            config.data.files,
            self.tokenizer,
            self.model.tokens_per_image,
            config.data.max_length,
            config.data.bad_samples,
        )
        # Every image is decoded now, before anything is written to the run folder: a bad image
        # must not surface only when its batch comes (or never, in a short run).
        verify_images(
            self.data, config.data.bad_samples, progress=config.run.progress and self.dist.main
        )
        if self.data.report.n_skipped:
            self._log(str(self.data.report))
        self.stages = make_stages(config.stages, self.model, self.data, self.tokenizer, config.data)
        self.skipped: list[str] = []
        self.step = 0  # optimizer steps over all stages
        self.objective: Objective | None = None

    # ------------------------------------------------------------------ setup
    def _tokenizer(self) -> CheersTokenizer:
        m = self.config.model
        return CheersTokenizer.from_folder(m.tokenizer or m.from_pretrained)

    def _build_model(self) -> Cheers:
        m, run = self.config.model, self.config.run
        torch.manual_seed(run.seed)
        saved = None if self.resume is None else self.tuning.resume_from(self.resume.folder)
        if saved is not None:
            model = load_model(saved, dtype=torch.float32)
        elif m.from_pretrained is not None:
            model = load_model(m.from_pretrained, dtype=torch.float32)
        else:
            model = self._new_model()
        self.tuning.attach(model, None if self.resume is None else self.resume.folder)
        if len(self.tokenizer) > model.config.text_config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the model's vocab_size is "
                f"{model.config.text_config.vocab_size}; raise text_config.vocab_size"
            )
        model.model.language_model.gradient_checkpointing = run.gradient_checkpointing
        return model.to(self.dist.device).train()

    def _new_model(self) -> Cheers:
        m = self.config.model
        if m.preset == "official":
            cfg = CheersConfig.official()
        elif m.preset == "tiny":
            cfg = CheersConfig.tiny()
        elif m.preset is not None:
            raise ConfigError(f"unknown preset {m.preset!r}; use 'official' or 'tiny'")
        else:
            cfg = CheersConfig.from_json(m.config)
        model = Cheers(cfg).init_weights()
        if m.language_model or m.vision_model or m.vae:
            from cheers.training.components import init_from_components

            for report in init_from_components(
                model, language_model=m.language_model, vision_model=m.vision_model, vae=m.vae
            ):
                self._log(str(report))
        return model

    def _log(self, message: str) -> None:
        if self.dist.main:
            print(message, flush=True)

    # -------------------------------------------------------------- the loop
    def run(self) -> Path:
        """Train every stage; returns the folder of the final model (or adapter)."""
        first = 0
        if self.resume is not None:
            first, self.step = self.resume.stage_index, self.resume.step
            self.skipped = list(self.resume.skipped)
            self._log(f"resuming from {self.resume.folder} (step {self.step})")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._prepare_metrics()
        final = None
        for index in range(first, len(self.stages)):
            final = self._run_stage(index, self.resume if index == first else None)
        if self.skipped:
            self._log(f"{len(self.skipped)} sample(s) skipped for unreadable images")
        if self.data.report.n_skipped:
            self._log(str(self.data.report))
        self.dist.barrier()
        return final if final is not None else self.out / "final"

    def _run_stage(self, index: int, resume: ckpt.ResumePoint | None) -> Path:
        stage, cfg = self.stages[index], self.config.stages[index]
        params = self.tuning.trainable(self.model, cfg)
        self._report_memory(index, params)
        wrapped = self._wrap()
        # Read after wrapping: FSDP replaces the parameters with sharded ones.
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        if resume is not None:
            ckpt.load_optimizer(self.model, optimizer, resume)
        seed = self.config.run.seed + 1000 * index
        start = 0 if resume is None else resume.stage_step
        stream = BatchStream(
            stage.source,
            cfg.batch_size,
            seed,
            self.config.data.group_window,
            None if resume is None else resume.stream,
        )
        bar = self._progress(index, start)
        t_start, samples_done = time.perf_counter(), 0
        for stage_step in range(start, cfg.steps):
            lr = lr_at(cfg, stage_step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            global_batch = stream.next()
            values = self._train_step(wrapped, stage, global_batch, seed)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.step += 1
            samples_done += len(global_batch)
            elapsed = time.perf_counter() - t_start
            row = {
                "step": self.step,
                "stage": cfg.name,
                "stage_step": stage_step + 1,
                "lr": lr,
                **values,
                "grad_norm": float(grad_norm),
                "samples": stream.samples_consumed,
                "samples_per_s": samples_done / max(elapsed, 1e-9),
                "elapsed_s": elapsed,
            }
            self._log_step(row, bar)
            last = stage_step + 1 == cfg.steps
            if last:
                stage.finish(wrapped, seed)
            if (stage_step + 1) % self.config.run.save_every == 0 or last:
                self._save(index, stage_step + 1, stream.state, optimizer)
        if bar is not None:
            bar.close()
        return self.ckpt_dir / ckpt.checkpoint_name(self.step) / self.tuning.part

    def _wrap(self) -> nn.Module:
        """The objective, wrapped for this stage (DDP follows the stage's trainable set)."""
        if self.objective is None:
            self.objective = Objective(self.model)
            if self.dist.world > 1 and self.config.run.strategy == "fsdp":
                from torch.distributed.fsdp import fully_shard

                m = self.model.model
                for layer in [*m.language_model.layers, *m.vision_representation.encoder.layers]:
                    fully_shard(layer)
                fully_shard(self.objective)
        if self.dist.world == 1 or self.config.run.strategy == "fsdp":
            return self.objective
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(self.objective)

    def _train_step(
        self, wrapped: nn.Module, stage: Stage, global_batch, seed: int
    ) -> dict[str, float]:
        """Forward/backward over this process's share of the global batch, all micro-batches."""
        accum = stage.config.grad_accum
        micro = len(global_batch) // accum
        shares = []
        for k in range(accum):
            chunk = global_batch[k * micro : (k + 1) * micro]
            batch = stage.batch(chunk[self.dist.rank :: self.dist.world], seed)
            self.skipped += stage.skipped(batch)
            shares.append(batch)
        counts = self.dist.sum([float(sum(stage.counts(b)[j] for b in shares)) for j in (0, 1)])
        sums = [0.0, 0.0]
        for batch in shares:
            with self._autocast():
                first, second = stage.parts(wrapped(batch))
            loss = first / max(counts[0], 1) + stage.second_weight * second / max(counts[1], 1)
            # Gradients are averaged over processes; the counts already cover all of them.
            (loss * self.dist.world).backward()
            sums[0] += float(first.detach())
            sums[1] += float(second.detach())
        total = self.dist.sum(sums)
        text, image = total[0] / max(counts[0], 1), total[1] / max(counts[1], 1)
        return {"loss": text + stage.second_weight * image, "text_loss": text, "image_loss": image}

    def _autocast(self):
        if self.dist.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _save(self, index: int, stage_step: int, stream: StreamState, optimizer) -> None:
        model_state, optim_state = ckpt.gather(self.model, optimizer)
        if self.dist.main:
            state = ckpt.trainer_state(
                self.config, index, stage_step, self.step, stream, self.skipped, self.dist.world
            )
            ckpt.write_checkpoint(
                self.ckpt_dir,
                self.step,
                lambda folder: self.tuning.save(model_state, self.model, self.tokenizer, folder),
                optim_state,
                state,
                self.config.run.keep_last,
            )
        self.dist.barrier()

    # -------------------------------------------------------------- logging
    def _report_memory(self, index: int, params: list[nn.Parameter]) -> None:
        """Log and record (``summary.json``) what the stage trains and what AdamW will hold."""
        cfg = self.config.stages[index]
        trainable = sum(p.numel() for p in params)
        total = sum(p.numel() for p in self.model.parameters())
        # AdamW keeps two moments (exp_avg, exp_avg_sq) in each parameter's dtype.
        optim_bytes = sum(2 * p.numel() * p.element_size() for p in params)
        what = "adapter" if self.tuning.adapters else "trainable"
        self._log(
            f"stage {index + 1}/{len(self.stages)} {cfg.name!r}: {cfg.steps} steps, "
            f"{trainable:,} {what} parameters of {total:,} ({100 * trainable / total:.2f} %), "
            f"optimizer state {optim_bytes / 2**20:.2f} MiB, batch {cfg.batch_size}"
        )
        if not self.dist.main:
            return
        path = self.out / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {"stages": {}}
        summary["stages"][cfg.name] = {
            "trainable_parameters": trainable,
            "total_parameters": total,
            "optimizer_state_bytes": optim_bytes,
            "lora": self.tuning.adapters,
        }
        text = (json.dumps(summary, indent=2) + "\n").encode()
        atomic_write(path, lambda f: f.write(text))

    def _progress(self, index: int, start: int):
        if not (self.dist.main and self.config.run.progress):
            return None
        from tqdm.auto import tqdm

        cfg = self.config.stages[index]
        return tqdm(total=cfg.steps, initial=start, desc=cfg.name, unit="step")

    def _log_step(self, row: dict, bar) -> None:
        if self.dist.main and (row["stage_step"]) % self.config.run.log_every == 0:
            with (self.out / "metrics.csv").open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=METRIC_FIELDS).writerow(row)
        if bar is not None:
            bar.set_postfix(
                text=f"{row['text_loss']:.3f}",
                image=f"{row['image_loss']:.4f}",
                sps=f"{row['samples_per_s']:.1f}",
            )
            bar.update(1)

    def _prepare_metrics(self) -> None:
        path = self.out / "metrics.csv"
        if path.exists():
            # After a resume, rows past the checkpoint are dropped: they will be recomputed.
            with path.open() as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= self.step]
        else:
            rows = []
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)


def _check_output_dir(out: Path) -> None:
    """Fail now, not after loading the model and data, if the run folder cannot be written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"run.output_dir {out} is a file, not a folder; choose another run.output_dir"
        )
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"run.output_dir {out} cannot be created: {existing} is a file; choose another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"run.output_dir {out} cannot be written ({existing} is not writable); choose a "
            "writable run.output_dir"
        )
