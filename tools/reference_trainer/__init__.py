"""Reference training task and loop for classy-hooks: the demo, and the example to copy.

What to copy: `task.py` (`ReferenceTask`, the loop: phases, DDP/FSDP2, device, AMP, state for checkpoints),
`config.py` (JSON config with checked keys, `{run_dir}` / `$VAR` in string values) and `train.py` (the command
line: torchrun, NCCL or gloo, `--resume` through `classy_hooks.model.resume_task`). What to replace with your
own: `data.py`, `models.py`, `meters.py` (synthetic images, tiny models, an accuracy meter). Nothing here is
test-only: the test harness (recording hooks, crash workers, `tests/helpers.py`) lives under `tests/`.

`ReferenceTask` satisfies `classy_hooks.core.Task` and drives hooks the way Classy Vision's trainer
did: advance the phase, then `on_phase_start`; sync losses and meters, then `on_phase_end`;
restore hook state before `on_start`.
"""

from reference_trainer.task import ReferenceTask

__all__ = ["ReferenceTask"]
