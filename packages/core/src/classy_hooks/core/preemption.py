"""How a hook tells the training loop that the job was preempted and must stop now (torch-free).

`CheckpointHook(preemption_signals=[...])` catches e.g. SIGTERM (Kubernetes, most schedulers) or
SIGUSR1 (SLURM's `--signal`), lets training run to the next optimizer step, writes one checkpoint
on every rank's agreement, and then raises `TrainingPreempted` from `on_step`. A loop lets it
propagate (no further hook function is called: not `on_phase_end`, not `on_end`) and exits the
process with `PREEMPTED_EXIT_CODE`, which a scheduler can be told to requeue on; the next start
resumes from the checkpoint folder.
"""

from __future__ import annotations

#: Exit status of a run stopped by a preemption signal after its checkpoint was written:
#: EX_TEMPFAIL of sysexits.h ("temporary failure, retry"). Requeue on it, e.g. Kubernetes
#: `podFailurePolicy` / SLURM `--requeue` scripts / torchrun `--max-restarts`.
PREEMPTED_EXIT_CODE = 75


class TrainingPreempted(Exception):
    """Raised by a hook at a step boundary once the preemption checkpoint is complete and durable.

    `signal_name` is the signal that asked for it (e.g. "SIGTERM"; the first one any rank received)
    and `checkpoint` the path of the checkpoint written. Every rank raises it at the same step.
    """

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, signal_name: str, checkpoint: str) -> None:
        super().__init__(
            f"training preempted by {signal_name}: checkpoint {checkpoint} written; "
            f"exit with status {PREEMPTED_EXIT_CODE} and resume from it"
        )
        self.signal_name = signal_name
        self.checkpoint = checkpoint
