"""Reference training task and loop for classy-hooks: the demo, the test harness, an example to copy.

`ReferenceTask` satisfies `classy_hooks.core.Task` and drives hooks the way Classy Vision's trainer
did: advance the phase, then `on_phase_start`; sync losses and meters, then `on_phase_end`;
restore hook state before `on_start`.
"""

from reference_trainer.task import ReferenceTask

__all__ = ["ReferenceTask"]
