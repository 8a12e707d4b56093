"""`ReferenceTask`: a config-driven classification task and loop that satisfies `classy_hooks.core.Task`."""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from classy_hooks.core import (
    KNOWN_HOOKS,
    ClassyHook,
    ClassyHookFunctions,
    LastBatch,
    build_hooks,
    call_hooks,
    check_hooks,
    get_hooks_state,
    get_rank,
    get_world_size,
    plain_state_dict,
    registered_hook_names,
    set_hooks_state,
)
from classy_hooks.core.task import DATA_POSITION_KEY
from reference_trainer.config import DEFAULT_CONFIG, ConfigError, check_keys, merge, substitute
from reference_trainer.data import SyntheticImages, batches_per_epoch, build_loader
from reference_trainer.meters import AccuracyMeter
from reference_trainer.models import build_model

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`"device"` of the config: "auto" is CUDA when available, else the CPU; CUDA under torchrun is cuda:LOCAL_RANK."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"reference trainer: 'device' must be 'auto', 'cpu' or 'cuda', got {name!r}.")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("reference trainer: 'device': 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'.")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def check_amp(options: Any) -> torch.dtype | None:
    """`"amp"` of the config: null (full precision) or {"dtype": "bfloat16" | "float16"}, the autocast dtype."""
    if options is None:
        return None
    if not isinstance(options, dict) or set(options) != {"dtype"} or options["dtype"] not in AMP_DTYPES:
        raise ConfigError(
            f"reference trainer: 'amp' must be null or {{\"dtype\": \"bfloat16\"}} (or \"float16\"), got {options!r}."
        )
    return AMP_DTYPES[options["dtype"]]

class ReferenceTask:
    """Trains `model` on synthetic data for `num_epochs` train phases, with test phases in between.

    Build with `ReferenceTask.from_config(config)`, optionally `set_classy_state(...)` to resume,
    then `run()`. Works on one process or under `torchrun` (gloo, DistributedDataParallel, or FSDP2
    with `"fsdp": true`); `"compile": {"backend": ...}` runs the model through `torch.compile`;
    `"device"` picks CPU or CUDA (NCCL under torchrun, see train.py) and `"amp"` mixed precision.
    """

    def __init__(self, config: Mapping[str, Any], hooks: Sequence[ClassyHook] = ()) -> None:
        check_keys(config)
        self.config = merge(DEFAULT_CONFIG, config)
        self.config.pop("hooks", None)
        cfg = self.config
        self.hooks = check_hooks(hooks)
        self.test_only = bool(cfg["test_only"])
        self.optimizer_period = int(cfg["optimizer_period"])
        torch.manual_seed(cfg["seed"])
        data = cfg["dataset"]
        self.batch_size = int(data["batch_size"])
        self.device = resolve_device(cfg["device"])
        self.use_gpu = self.device.type == "cuda"
        self.amp_dtype = check_amp(cfg["amp"])
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.use_gpu and self.amp_dtype == torch.float16 else None
        self.base_model: nn.Module = build_model(cfg["model"], data["image_size"], data["num_classes"]).to(self.device)
        self.fsdp = bool(cfg["fsdp"])
        self.compile_options = self._check_compile_options(cfg["compile"])
        if self.fsdp:
            self._shard_model()  # before the optimizer is built: fully_shard replaces the parameters
        self.train_dataset = SyntheticImages(
            data["train_samples"],
            data["num_classes"],
            data["image_size"],
            seed=cfg["seed"],
            noise=data["noise"],
            split=0,
        )
        self.test_dataset = SyntheticImages(
            data["test_samples"],
            data["num_classes"],
            data["image_size"],
            seed=cfg["seed"],
            noise=data["noise"],
            id_offset=1_000_000,
            split=1,
        )
        self.phases = self._build_phases()
        opt = dict(cfg["optimizer"])
        self.base_lr = float(opt["lr"])
        self.optimizer: torch.optim.Optimizer | None = None if self.test_only else self._build_optimizer(opt)
        self.loss_fn = nn.CrossEntropyLoss()
        self.meters = [AccuracyMeter()]
        self.losses: list[Any] = []
        self.phase_idx = -1
        self.train_phase_idx = -1
        self.num_updates = 0
        self.train = True
        self.last_batch: LastBatch | None = None
        self.is_optimizer_step = True
        self.perf_log: list[dict[str, Any]] = []
        self.dataloader: Any = None
        self.batches_done = 0  # batches of the current phase done (the data position)
        self._skipped_batches = 0  # batches of the current phase done before this process resumed it
        self._remaining_batches: Any = None  # the loop's loader: `dataloader` without the batches already done
        self._resume_position: dict[str, Any] | None = None  # set by set_classy_state from a mid-phase checkpoint
        self.model: nn.Module = self.base_model
        self._distributed_wrapped = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any], run_dir: str = ".") -> ReferenceTask:
        """Build the task and its `"hooks"` list.

        `"imports"` lists modules to import first (hooks of your own register themselves there).
        In string values, `{run_dir}` becomes the run folder and `$NAME` / `${NAME}` an environment variable
        (an unset one is a ConfigError naming the key); unknown keys are a ConfigError with close matches.
        With `"skip_unavailable_hooks": true`, first-party hooks whose package is not installed are
        left out with a warning instead of failing (the demo uses this).
        """
        check_keys(config)
        merged = merge(DEFAULT_CONFIG, substitute(config, run_dir))
        for module in merged.pop("imports", []):  # modules that register hooks of your own
            importlib.import_module(module)
        hook_configs = merged.pop("hooks")
        if merged.pop("skip_unavailable_hooks", False):
            available = set(registered_hook_names())
            for hook_config in hook_configs:
                if hook_config.get("name") in KNOWN_HOOKS and hook_config["name"] not in available:
                    logger.warning(
                        "Skipping hook %r: no installed package provides it (it comes with %s).",
                        hook_config["name"],
                        KNOWN_HOOKS[hook_config["name"]],
                    )
            hook_configs = [c for c in hook_configs if c.get("name") not in KNOWN_HOOKS or c["name"] in available]
        return cls(merged, build_hooks(hook_configs))

    # ---- the Task contract -------------------------------------------------------------------

    @property
    def phase_type(self) -> str:
        return "train" if self.train else "test"

    @property
    def eval_phase_idx(self) -> int:
        return self.phase_idx - self.train_phase_idx - 1

    @property
    def num_batches_per_phase(self) -> int:
        return len(self.dataloader) if self.dataloader is not None else 0

    @property
    def where(self) -> float:
        total = (
            self.num_train_phases
            * batches_per_epoch(len(self.train_dataset), self.batch_size, get_world_size())
            * self.get_global_batchsize()
        )
        return min(self.num_updates / total, 1.0) if total else 0.0

    @property
    def num_train_phases(self) -> int:
        return sum(1 for p in self.phases if p["train"])

    def get_batchsize_per_replica(self) -> int:
        return self.batch_size

    def get_global_batchsize(self) -> int:
        return self.batch_size * get_world_size()

    def get_classy_state(self, deep_copy: bool = False) -> dict[str, Any]:
        """Everything needed to continue exactly here; loads with `torch.load(weights_only=True)`."""
        state = {
            "train": self.train,
            "base_model": self.base_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "meters": [m.get_classy_state() for m in self.meters],
            "phase_idx": self.phase_idx,
            "train_phase_idx": self.train_phase_idx,
            "num_updates": self.num_updates,
            "losses": [float(x) for x in self.losses],
            "hooks": get_hooks_state(self.hooks),
            "rng_state": torch.get_rng_state(),
        }
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return copy.deepcopy(state) if deep_copy else state

    def get_data_position(self) -> dict[str, Any]:
        """Where the current train phase is, for a mid-phase checkpoint (the optional task contract,
        `classy_hooks.core.task.DATA_POSITION_KEY`).

        A collective under torch.distributed (CheckpointHook calls it on every rank at the same
        optimizer step): each rank's partial losses and meter counts are gathered, since the
        checkpoint holds the primary rank's state only. The data order itself is a function of the
        seed and epoch, so the batch count is the whole position. Gradients are never pending here:
        checkpoints are taken right after optimizer steps.
        """
        local = {
            "losses": torch.stack(self.losses) if self.losses else torch.zeros(0),
            "meters": [m.get_classy_state() for m in self.meters],
        }
        ranks: list[Any] = [local]
        if dist.is_initialized() and get_world_size() > 1:
            ranks = [None] * get_world_size()
            dist.all_gather_object(ranks, local)
        return {"batches": self.batches_done, "phase_idx": self.phase_idx, "ranks": ranks}

    def set_classy_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from `get_classy_state` (call before `run`, i.e. before `on_start`).

        A mid-phase checkpoint (with `DATA_POSITION_KEY`) makes `run` continue that phase after the
        batches already done, with this rank's partial losses and meters, instead of starting the next.
        """
        self.train = state["train"]
        model_state = plain_state_dict(state["base_model"])  # also old `_orig_mod.` / `module.` keys
        if self.fsdp and not any(type(v).__name__ == "DTensor" for v in model_state.values()):
            self._load_full_state_into_shards(model_state, state.get("optimizer"))
        else:
            self.base_model.load_state_dict(model_state)
            if self.optimizer is not None and state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
        for meter, meter_state in zip(self.meters, state["meters"]):
            meter.set_classy_state(meter_state)
        self.phase_idx = state["phase_idx"]
        self.train_phase_idx = state["train_phase_idx"]
        self.num_updates = state["num_updates"]
        self.losses = list(state["losses"])
        set_hooks_state(self.hooks, state.get("hooks", {}))
        if "rng_state" in state:
            torch.set_rng_state(state["rng_state"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self._resume_position = None
        position = state.get(DATA_POSITION_KEY)
        if position is not None:
            if len(position["ranks"]) != get_world_size():
                raise ValueError(
                    f"reference trainer: the checkpoint was taken inside phase {position['phase_idx']} on "
                    f"{len(position['ranks'])} rank(s); resume it on as many ranks (now {get_world_size()}), or "
                    "resume from a phase-end checkpoint (model_phase-N_end.torch), which any world size can."
                )
            self._resume_position = dict(position)

    def _load_full_state_into_shards(self, model_state: Mapping[str, Any], optimizer_state: Any) -> None:
        """FSDP2 from a single-file checkpoint (full tensors, index-keyed optimizer): each rank keeps its shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        optim_by_name: dict[str, Any] = {}
        if self.optimizer is not None and optimizer_state is not None:
            names = {id(p): n for n, p in self.base_model.named_parameters()}
            ordered = [names[id(p)] for group in self.optimizer.param_groups for p in group["params"]]
            optim_by_name = {
                "state": {ordered[i]: slots for i, slots in optimizer_state["state"].items()},
                "param_groups": [
                    {**group, "params": [ordered[i] for i in group["params"]]}
                    for group in optimizer_state["param_groups"]
                ],
            }
        set_state_dict(
            self.base_model,
            self.optimizer if self.optimizer is not None and optim_by_name else [],
            model_state_dict=dict(model_state),
            optim_state_dict=optim_by_name,
            options=StateDictOptions(full_state_dict=True),
        )

    # ---- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Train and test through every remaining phase, calling the hooks at each event."""
        self._wrap_distributed()
        if dist.is_initialized():
            dist.barrier()
        call_hooks(self.hooks, ClassyHookFunctions.on_start, self)
        while self._resume_position is not None or self.phase_idx + 1 < len(self.phases):
            if self._resume_position is not None:
                self._continue_phase(self._resume_position)  # on_phase_start is called again for it
                self._resume_position = None
            else:
                self._advance_phase()
            call_hooks(self.hooks, ClassyHookFunctions.on_phase_start, self)
            start = time.perf_counter()
            fetch_start = time.perf_counter()
            for batch_idx, batch in enumerate(self._remaining_batches, start=self._skipped_batches):
                fetch_time = time.perf_counter() - fetch_start
                self._step(batch, batch_idx, fetch_time)
                call_hooks(self.hooks, ClassyHookFunctions.on_step, self)
                fetch_start = time.perf_counter()
            self._end_phase(time.perf_counter() - start)
            call_hooks(self.hooks, ClassyHookFunctions.on_phase_end, self)
        call_hooks(self.hooks, ClassyHookFunctions.on_end, self)

    def _build_phases(self) -> list[dict[str, bool]]:
        if self.test_only:
            return [{"train": False}]
        period = int(self.config["test_phase_period"])
        phases = []
        for epoch in range(int(self.config["num_epochs"])):
            phases.append({"train": True})
            if period > 0 and (epoch + 1) % period == 0:
                phases.append({"train": False})
        return phases

    def _build_optimizer(self, options: dict[str, Any]) -> torch.optim.Optimizer:
        name = options.pop("name", "sgd")
        if name == "sgd":
            return torch.optim.SGD(self.base_model.parameters(), **options)
        if name == "adamw":
            return torch.optim.AdamW(self.base_model.parameters(), **options)
        raise ValueError(f"reference trainer: unknown optimizer {name!r}; use 'sgd' or 'adamw'.")

    @staticmethod
    def _check_compile_options(options: Any) -> dict[str, Any] | None:
        if options is None or options is False:
            return None
        if options is True:
            return {}
        if not isinstance(options, dict):
            raise ValueError(
                f"reference trainer: 'compile' must be null, true or a dict of torch.compile options "
                f"(e.g. {{\"backend\": \"aot_eager\"}}), got {options!r}."
            )
        return dict(options)

    def _shard_model(self) -> None:
        """FSDP2: `fully_shard` each block (a child module with parameters; `nn.Sequential` children are
        looked into, so the block is e.g. a conv layer or a ResNet BasicBlock), then the root."""
        if not dist.is_initialized():
            raise ValueError(
                "reference trainer: 'fsdp': true needs torch.distributed; run under torchrun "
                "(e.g. torchrun --nproc_per_node 2 tools/train.py ...) or set 'fsdp' to false."
            )
        from torch.distributed.fsdp import fully_shard

        def shard_blocks(module: nn.Module) -> None:
            for child in module.children():
                if isinstance(child, nn.Sequential):
                    shard_blocks(child)
                elif any(True for _ in child.parameters()):
                    fully_shard(child)

        shard_blocks(self.base_model)
        fully_shard(self.base_model)
        logger.info("Model sharded with FSDP2 fully_shard over %d ranks (each block and the root).", get_world_size())

    def _wrap_distributed(self) -> None:
        """DDP (unless the model is sharded with FSDP2), then torch.compile on top, once."""
        ddp = dist.is_initialized() and dist.get_world_size() > 1 and not self.fsdp
        if self._distributed_wrapped or not (ddp or self.compile_options is not None):
            return  # nothing to wrap: self.model stays base_model
        model: nn.Module = self.base_model
        if ddp:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if self.use_gpu else None)
        if self.compile_options is not None:
            model = torch.compile(model, **self.compile_options)  # type: ignore[assignment]
            logger.info("Model compiled with torch.compile(%s).", self.compile_options)
        self.model = model
        self._distributed_wrapped = True

    @torch.no_grad()
    def _sync_buffers(self) -> None:
        """FSDP2 shards parameters only: give every rank rank 0's buffers (BatchNorm statistics) after each
        train forward, as DDP's broadcast_buffers does, so that the ranks never disagree on them."""
        for buffer in self.base_model.buffers():
            dist.broadcast(buffer, src=0)

    def _advance_phase(self) -> None:
        self.phase_idx += 1
        self.train = self.phases[self.phase_idx]["train"]
        if self.train:
            self.train_phase_idx += 1
        self.losses = []
        for meter in self.meters:
            meter.reset()
        self._start_loader(skip_batches=0)

    def _continue_phase(self, position: Mapping[str, Any]) -> None:
        """A mid-phase resume: the phase of `position` again, after its done batches, with this rank's partials."""
        mine = position["ranks"][get_rank()]
        self.losses = list(mine["losses"].unbind(0))
        for meter, meter_state in zip(self.meters, mine["meters"]):
            meter.set_classy_state(meter_state)
        self._start_loader(skip_batches=int(position["batches"]))

    def _start_loader(self, skip_batches: int) -> None:
        self.perf_log = []
        self.last_batch = None
        self.batches_done = self._skipped_batches = skip_batches
        dataset = self.train_dataset if self.train else self.test_dataset
        options: dict[str, Any] = {
            "train": self.train,
            "batch_size": self.batch_size,
            "rank": get_rank(),
            "world_size": get_world_size(),
            "seed": self.config["seed"],
            "epoch": max(self.train_phase_idx, 0),
            "pin_memory": self.use_gpu,  # page-locked batches: the copies to the GPU run asynchronously
        }
        # hooks see the whole phase's loader (precise BN iterates it afresh); the loop runs what is left of it
        self.dataloader = build_loader(dataset, **options)
        self._remaining_batches = build_loader(dataset, skip_batches=skip_batches, **options) if skip_batches else (
            self.dataloader
        )
        self.base_model.train(self.train)

    def _lr(self) -> float:
        schedule = self.config["lr_schedule"]
        where = self.where
        warmup = float(schedule.get("warmup_fraction", 0.0))
        if warmup > 0 and where < warmup:
            return self.base_lr * (where / warmup)
        if schedule["name"] == "cosine":
            progress = (where - warmup) / max(1.0 - warmup, 1e-12)
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule["name"] == "constant":
            return self.base_lr
        raise ValueError(f"reference trainer: unknown lr_schedule {schedule['name']!r}; use 'cosine' or 'constant'.")

    def _step(self, batch: dict[str, torch.Tensor], batch_idx: int, fetch_time: float) -> None:
        """One batch. Gradient accumulation (`optimizer_period` P): an optimizer step every P batches and after
        the last batch of the phase, each averaging the gradients of its own batches (the last window of a
        phase may be shorter). No gradient is carried over a phase end, so a phase-end checkpoint is complete."""
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        inputs, target = batch["input"], batch["target"]
        if self.train:
            assert self.optimizer is not None
            window_start = batch_idx - batch_idx % self.optimizer_period
            window = min(self.optimizer_period, self.num_batches_per_phase - window_start)
            if batch_idx == window_start:
                lr = self._lr()
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
            with self._autocast():
                output = self.model(inputs)
                loss = self.loss_fn(output, target)
            if self.fsdp:
                self._sync_buffers()
            scaled = loss / window
            (self.grad_scaler.scale(scaled) if self.grad_scaler is not None else scaled).backward()
            self.is_optimizer_step = batch_idx + 1 == window_start + window
            if self.is_optimizer_step:
                if self.grad_scaler is not None:
                    self.grad_scaler.step(self.optimizer)
                    self.grad_scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.num_updates += self.get_global_batchsize()
        else:
            with torch.no_grad(), self._autocast():
                output = self.model(inputs)
                loss = self.loss_fn(output, target)
            self.is_optimizer_step = False
        with torch.no_grad():
            for meter in self.meters:
                meter.update(output.detach(), target)
        self.losses.append(loss.detach())
        self.batches_done = batch_idx + 1
        self.last_batch = LastBatch(
            loss=loss.detach(),
            output=output.detach(),
            target=target,
            sample=batch,
            step_data={"sample_fetch_time": fetch_time},
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision on the task's device with `"amp"`; a no-op context without it."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _end_phase(self, seconds: float) -> None:
        """Sync losses (every rank's batch losses, gathered) and meters, as Classy Vision did."""
        local = [float(x) for x in torch.stack(self.losses).tolist()] if self.losses else []
        if dist.is_initialized() and get_world_size() > 1:
            gathered: list[Any] = [None] * get_world_size()
            dist.all_gather_object(gathered, local)
            local = [x for part in gathered for x in part]
        self.losses = local
        for meter in self.meters:
            meter.sync_state()
        samples = len(self.dataloader.sampler) * get_world_size()
        self.perf_log.append(
            {"tag": self.phase_type, "phase_idx": self.phase_idx, "im_per_sec": samples / max(seconds, 1e-9)}
        )
        if dist.is_initialized():
            dist.barrier()

    def __repr__(self) -> str:
        return f"ReferenceTask(config={json.dumps(self.config, sort_keys=True)})"
