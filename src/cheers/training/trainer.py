"""The training loop: stages, optimiser, schedule, logging, atomic checkpoints, exact resume.

Runs in one process or under ``torchrun`` (DDP, or FSDP2 ``fully_shard``). Every process
builds the same global batch and takes its share; losses are normalised by counts summed over
all processes, so N processes compute the same update as one process with the same batch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from cheers.checkpoint import load_model, save_state
from cheers.config import CheersConfig
from cheers.data.loader import BatchStream, StreamState, TrainingData
from cheers.data.verify import verify_images
from cheers.errors import CheckpointError, ConfigError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from cheers.training.objective import Objective, make_batch
from cheers.training.recipe import MODULE_GROUPS, NEVER_TRAINED, StageConfig, TrainConfig, lr_at
from cheers.training.vae import finish_vae, make_vae_batch, vae_images

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


class _ImageData:
    """Adapter giving the VAE stage's image list the interface BatchStream expects."""

    def __init__(self, images: list[tuple[str, str, str]]) -> None:
        self.items = images

    def length(self, index: int) -> int:
        return 0

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(len(self.items), generator=g).tolist()


class Trainer:
    """Runs a :class:`TrainConfig` from the start, or from its latest checkpoint."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = config
        self.dist = Dist.setup(config.run.device)
        self.out = Path(config.run.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.resume_state: dict | None = None
        self.resume_dir: Path | None = None
        if resume:
            self.resume_dir = latest_checkpoint(self.ckpt_dir)
            if self.resume_dir is None:
                raise CheckpointError(
                    f"--resume: no checkpoint in {self.ckpt_dir}; start without --resume"
                )
            self.resume_state = json.loads((self.resume_dir / "trainer_state.json").read_text())
            _check_stages_kept(self.resume_state, config, self.resume_dir)
        elif self.dist.main and (self.ckpt_dir / "latest").exists():
            raise CheckpointError(
                f"{self.out} already holds a run; pass --resume to continue it or choose "
                "another run.output_dir"
            )
        _check_output_dir(self.out)
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
        for i, stage in enumerate(config.stages):
            if stage.kind == "vae" and not vae_images(self.data.examples):
                raise ConfigError(
                    f"stages[{i}] ({stage.name!r}) is a 'vae' stage but the data has no images; "
                    "add samples with images to [data] files or remove the stage"
                )
        self.skipped: list[str] = []
        self.step = 0  # optimizer steps over all stages
        self.objective: Objective | None = None

    # ------------------------------------------------------------------ setup
    def _tokenizer(self) -> CheersTokenizer:
        m = self.config.model
        folder = m.tokenizer or m.from_pretrained
        return CheersTokenizer.from_folder(folder)

    def _build_model(self) -> Cheers:
        m, run = self.config.model, self.config.run
        torch.manual_seed(run.seed)
        if self.resume_dir is not None:
            model = load_model(self.resume_dir / "model", dtype=torch.float32)
        elif m.from_pretrained is not None:
            model = load_model(m.from_pretrained, dtype=torch.float32)
        else:
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
        if len(self.tokenizer) > model.config.text_config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the model's vocab_size is "
                f"{model.config.text_config.vocab_size}; raise text_config.vocab_size"
            )
        model.model.language_model.gradient_checkpointing = run.gradient_checkpointing
        return model.to(self.dist.device).train()

    def _log(self, message: str) -> None:
        if self.dist.main:
            print(message, flush=True)

    # -------------------------------------------------------------- the loop
    def run(self) -> Path:
        """Train every stage; returns the folder of the final model."""
        first_stage, first_step, stream_state = 0, 0, None
        if self.resume_state is not None:
            s = self.resume_state
            first_stage, first_step = s["stage_index"], s["stage_step"]
            stream_state = StreamState(**s["stream"])
            self.step = s["step"]
            self.skipped = s.get("skipped", [])
            self._log(f"resuming from {self.resume_dir} (step {self.step})")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._prepare_metrics()
        final = None
        for index in range(first_stage, len(self.config.stages)):
            stage = self.config.stages[index]
            resumed = index == first_stage and self.resume_state is not None
            final = self._run_stage(
                index,
                stage,
                first_step if resumed else 0,
                stream_state if resumed else None,
                resumed,
            )
        if self.skipped:
            self._log(f"{len(self.skipped)} sample(s) skipped for unreadable images")
        if self.data.report.n_skipped:
            self._log(str(self.data.report))
        self.dist.barrier()
        return final if final is not None else self.out / "final"

    def _run_stage(
        self,
        index: int,
        stage: StageConfig,
        start: int,
        stream_state: StreamState | None,
        resumed: bool,
    ) -> Path:
        model = self.model
        trainable = sum(p.numel() for p in set_trainable(model, stage.trainable_groups()))
        wrapped = self._wrap()
        # Read after wrapping: FSDP replaces the parameters with sharded ones.
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=stage.lr, betas=tuple(stage.betas), weight_decay=stage.weight_decay
        )
        if resumed:
            self._load_optimizer(optimizer)
        source = _ImageData(vae_images(self.data.examples)) if stage.kind == "vae" else self.data
        seed = self.config.run.seed + 1000 * index
        stream = BatchStream(
            source, stage.batch_size, seed, self.config.data.group_window, stream_state
        )
        self._log(
            f"stage {index + 1}/{len(self.config.stages)} {stage.name!r}: {stage.steps} steps, "
            f"{trainable:,} trainable parameters, batch {stage.batch_size}"
        )
        bar = self._progress(stage, start)
        t_start, samples_done = time.perf_counter(), 0
        for stage_step in range(start, stage.steps):
            lr = lr_at(stage, stage_step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            global_batch = stream.next()
            values = self._train_step(wrapped, stage, global_batch, seed, source)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.step += 1
            samples_done += len(global_batch)
            elapsed = time.perf_counter() - t_start
            row = {
                "step": self.step,
                "stage": stage.name,
                "stage_step": stage_step + 1,
                "lr": lr,
                **values,
                "grad_norm": float(grad_norm),
                "samples": stream.samples_consumed,
                "samples_per_s": samples_done / max(elapsed, 1e-9),
                "elapsed_s": elapsed,
            }
            if self.dist.main and (stage_step + 1) % self.config.run.log_every == 0:
                self._write_metrics(row)
            if bar is not None:
                bar.set_postfix(
                    text=f"{values['text_loss']:.3f}",
                    image=f"{values['image_loss']:.4f}",
                    sps=f"{row['samples_per_s']:.1f}",
                )
                bar.update(1)
            last = stage_step + 1 == stage.steps
            if stage.kind == "vae" and last:
                self._finish_vae(wrapped, stage, seed, source.items)
            if (stage_step + 1) % self.config.run.save_every == 0 or last:
                self._save(index, stage_step + 1, stream.state, optimizer)
        if bar is not None:
            bar.close()
        return self.ckpt_dir / f"step-{self.step:07d}" / "model"

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
        self, wrapped: nn.Module, stage: StageConfig, global_batch, seed: int, source
    ) -> dict[str, float]:
        """Forward/backward over this process's share of the global batch, all micro-batches."""
        micro = len(global_batch) // stage.grad_accum
        shares = []
        for k in range(stage.grad_accum):
            chunk = global_batch[k * micro : (k + 1) * micro]
            mine = chunk[self.dist.rank :: self.dist.world]
            if stage.kind == "vae":
                items = [(uid, source.items[i]) for uid, i in mine]
                shares.append(make_vae_batch(items, self.model, seed))
            else:
                items = [(uid, self.data.examples[i]) for uid, i in mine]
                batch = make_batch(
                    items,
                    self.tokenizer,
                    self.model.config,
                    seed,
                    stage.guidance_dropout,
                    self.config.data.bad_samples,
                    time_shift=stage.time_shift,
                )
                self.skipped += batch.skipped
                shares.append(batch)
        counts = self.dist.sum(
            [float(sum(_counts(b, self.model)[j] for b in shares)) for j in (0, 1)]
        )
        sums = [0.0, 0.0]
        for batch in shares:
            with self._autocast():
                out = wrapped(batch)
            first, second = _parts(out)
            loss = first / max(counts[0], 1) + _second_weight(stage) * second / max(counts[1], 1)
            # Gradients are averaged over processes; the counts already cover all of them.
            (loss * self.dist.world).backward()
            sums[0] += float(first.detach())
            sums[1] += float(second.detach())
        total = self.dist.sum(sums)
        text = total[0] / max(counts[0], 1)
        image = total[1] / max(counts[1], 1)
        return {
            "loss": text + _second_weight(stage) * image,
            "text_loss": text,
            "image_loss": image,
        }

    def _autocast(self):
        if self.dist.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _finish_vae(
        self, wrapped: nn.Module, stage: StageConfig, seed: int, images: list[tuple[str, str, str]]
    ) -> None:
        """Latent statistics over (at most) the first 64 batches of the stage's images."""
        n = min(len(images), 64 * stage.batch_size)

        def batches():
            for k in range(0, n, stage.batch_size):
                ids = range(k, min(k + stage.batch_size, n))
                yield make_vae_batch([(i, images[i]) for i in ids], self.model, seed)

        self.model.eval()
        finish_vae(self.model, wrapped, batches())
        self.model.train()

    # -------------------------------------------------------------- logging
    def _progress(self, stage: StageConfig, start: int):
        if not (self.dist.main and self.config.run.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=stage.steps, initial=start, desc=stage.name, unit="step")

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

    def _write_metrics(self, row: dict) -> None:
        with (self.out / "metrics.csv").open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=METRIC_FIELDS).writerow(row)

    # ---------------------------------------------------------- checkpoints
    def _save(self, index: int, stage_step: int, stream: StreamState, optimizer) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.model, options=options)
        optim_state = get_optimizer_state_dict(self.model, optimizer, options=options)
        if self.dist.main:
            name = f"step-{self.step:07d}"
            tmp = self.ckpt_dir / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_state(model_state, self.model.config, tmp / "model")
            self.tokenizer.save(tmp / "model")
            tensors, groups = _flatten_optimizer(optim_state)
            tensors["rng.torch"] = torch.get_rng_state()
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            state = {
                "step": self.step,
                "stage_index": index,
                "stage_name": self.config.stages[index].name,
                "stage_names": [stage.name for stage in self.config.stages[: index + 1]],
                "stage_step": stage_step,
                "stream": {"window_start": stream.window_start, "served": stream.served},
                "param_groups": groups,
                "skipped": self.skipped,
                "world_size": self.dist.world,
            }
            if stage_step == self.config.stages[index].steps:
                # A finished stage resumes at the start of the next one.
                if index + 1 < len(self.config.stages):
                    state.update(stage_index=index + 1, stage_step=0)
                    state["stream"] = {"window_start": 0, "served": 0}
                    state["param_groups"] = None
                else:
                    state["finished"] = True
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            final = self.ckpt_dir / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _atomic_write(self.ckpt_dir / "latest", name)
            self._prune()
        self.dist.barrier()

    def _prune(self) -> None:
        keep = max(1, self.config.run.keep_last)
        done = sorted(p for p in self.ckpt_dir.glob("step-*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _load_optimizer(self, optimizer) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        state = self.resume_state
        if state is None or state.get("param_groups") is None:
            return
        tensors = load_file(str(self.resume_dir / "optimizer.safetensors"))
        torch.set_rng_state(tensors.pop("rng.torch"))
        optim_state = _unflatten_optimizer(tensors, state["param_groups"])
        set_optimizer_state_dict(
            self.model,
            optimizer,
            optim_state,
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False),
        )


def _counts(batch, model: Cheers) -> tuple[int, int]:
    """(text or reconstruction count, image or KL count) of a batch, known before forward."""
    from cheers.data.examples import IGNORE
    from cheers.training.vae import VAEBatch

    if isinstance(batch, VAEBatch):
        return batch.pixels.numel(), batch.noise.numel()
    text = sum(sum(1 for lab in e.labels if lab != IGNORE) for e in batch.examples)
    cfg = model.config
    return text, len(batch.t) * cfg.latent_channels * cfg.grid_size**2


def _parts(out) -> tuple[torch.Tensor, torch.Tensor]:
    """The two summed losses: (text, image), or (reconstruction, KL) in a VAE stage."""
    from cheers.training.vae import VAELossSums

    if isinstance(out, VAELossSums):
        return out.recon, out.kl
    return out.text, out.image


def _second_weight(stage: StageConfig) -> float:
    return stage.kl_weight if stage.kind == "vae" else 1.0


def set_trainable(model: Cheers, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Train the parameters of the module ``groups`` (never those in ``NEVER_TRAINED``) and
    freeze the rest; returns the trainable ones."""
    prefixes = tuple(p for g in groups for p in MODULE_GROUPS[g])
    params = []
    for name, param in model.named_parameters():
        train = name.startswith(prefixes) and not name.startswith(NEVER_TRAINED)
        param.requires_grad_(train)
        if train:
            params.append(param)
    return params


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, values in state["state"].items():
        for key, value in values.items():
            tensors[f"state.{name}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        name, slot = key.removeprefix("state.").rsplit(".", 1)
        state.setdefault(name, {})[slot] = value
    fixed = []
    for group in groups:
        g = dict(group)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        fixed.append(g)
    return {"state": state, "param_groups": fixed}


def _check_stages_kept(state: dict, config: TrainConfig, checkpoint: Path) -> None:
    """A resumed run may append stages, not replace the ones it has run (their state would be
    attributed to another stage)."""
    ran = state.get("stage_names")
    if ran is None:  # checkpoints written before the names were recorded
        return
    now = [stage.name for stage in config.stages[: len(ran)]]
    if now != ran:
        raise CheckpointError(
            f"--resume: {checkpoint} was written after the stages {ran}, but the config now "
            f"lists {now} in their place; keep the stages that already ran as they were (new "
            "ones can be appended at the end) or start a new run in another run.output_dir"
        )


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not (path / "trainer_state.json").is_file():
        raise CheckpointError(f"{pointer} names {path}, which is incomplete; remove it to restart")
    return path


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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
